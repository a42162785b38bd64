#!/bin/sh
# The start script the Bytewax Helm chart runs in the image (`sh ./entrypoint.sh` in
# /var/bytewax): the chart's recovery directory becomes Bytewax's, this pod's recovery
# partitions are created on first start, then the flow runs.
set -eu
if [ -n "${BYTEWAX_SQLITE_DIRECTORY:-}" ]; then
  export BYTEWAX_RECOVERY_DIRECTORY="$BYTEWAX_SQLITE_DIRECTORY"
fi
if [ -n "${BYTEWAX_RECOVERY_DIRECTORY:-}" ]; then
  candlewax recovery-init "$BYTEWAX_RECOVERY_DIRECTORY" \
    --partitions "${CANDLEWAX_RECOVERY_PARTITIONS:-8}" --processes "${BYTEWAX_REPLICAS:-1}"
fi
exec python -m bytewax.run flows.ohlcv
