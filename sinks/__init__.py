"""Where candles, trades, drift records and rejections go: Kafka topics and the Parquet lake."""
