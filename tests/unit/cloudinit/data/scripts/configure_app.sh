#!/bin/bash
set -eu
echo "configure-app" >> "$CLOUD_PAAS_TEST_OUT/steps"
printf '%s' "$APP_URL" > "$CLOUD_PAAS_TEST_OUT/app_url"
