#!/bin/bash
set -eu
echo "configure-db" >> "$CLOUD_PAAS_TEST_OUT/steps"
printf '%s' "$DB_PASSWORD" > "$CLOUD_PAAS_TEST_OUT/db_password"
printf '%s/%s' "$DB_NAME" "$HOST_CPUS" > "$CLOUD_PAAS_TEST_OUT/db_name"
