"""The steps of the candle flow: pure logic modules plus their thin Bytewax wrappers (`steps`)."""
