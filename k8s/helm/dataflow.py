"""The dataflow file waxctl deploys (and the Bytewax Helm chart runs from its ConfigMap):
the candle flow of the candlewax image, built from the pod's CANDLEWAX_* settings.

    waxctl dataflow deploy k8s/helm/dataflow.py ...   (see the README)
    python -m bytewax.run k8s/helm/dataflow.py        (the same, locally)
"""

from flows.ohlcv import flow  # noqa: F401  (bytewax.run looks up `flow` here)
