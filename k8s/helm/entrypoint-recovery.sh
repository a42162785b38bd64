#!/bin/sh
# What the Bytewax Helm chart's init container runs when recovery is on: create the
# recovery partitions on the pod's volume once (BYTEWAX_RECOVERY_PARTS of them, in
# BYTEWAX_RECOVERY_DIRECTORY); an existing store is left alone.
set -eu
directory="${BYTEWAX_RECOVERY_DIRECTORY:?the chart sets BYTEWAX_RECOVERY_DIRECTORY}"
if [ -z "$(ls -A "$directory" 2>/dev/null)" ]; then
  python -m bytewax.recovery "$directory" "${BYTEWAX_RECOVERY_PARTS:-1}"
fi
