#!/bin/bash
# test stand-in for a package install: records that it ran
set -eu
echo "create" >> "$CLOUD_PAAS_TEST_OUT/steps"
