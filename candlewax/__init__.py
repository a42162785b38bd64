"""candlewax: real-time OHLCV candles from market trades, built on Bytewax."""

__version__ = "0.1.0"
