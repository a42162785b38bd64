#!/bin/sh
# What the Bytewax Helm chart and waxctl run in the image (`sh ./entrypoint.sh` in the
# image's working directory, /bytewax): the dataflow they hand over (BYTEWAX_IMPORT_STR,
# or BYTEWAX_PYTHON_FILE_PATH: the file copied to /var/bytewax, k8s/helm/dataflow.py, which
# is the candle flow), or the flow module itself when none is given.
set -eu
if [ -n "${BYTEWAX_SQLITE_DIRECTORY:-}" ]; then
  export BYTEWAX_RECOVERY_DIRECTORY="$BYTEWAX_SQLITE_DIRECTORY"
fi
cd "${BYTEWAX_WORKDIR:-/bytewax}"
code=0
python -m bytewax.run "${BYTEWAX_IMPORT_STR:-${BYTEWAX_PYTHON_FILE_PATH:-flows.ohlcv}}" || code=$?
if [ "${BYTEWAX_KEEP_CONTAINER_ALIVE:-false}" = true ]; then
  echo "the flow ended (exit $code); keeping the container alive"
  while :; do sleep 1; done
fi
exit "$code"
