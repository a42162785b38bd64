-- candlewax serving tables (PostgreSQL 13+). Generated from candlewax/records.py by
-- `python -m sinks.postgres`; the flow creates the missing ones when it starts.

CREATE TABLE IF NOT EXISTS candles (
    symbol text NOT NULL,
    resolution text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    open double precision,
    high double precision,
    low double precision,
    close double precision,
    volume double precision,
    vwap double precision,
    trade_count bigint NOT NULL,
    bar_id text NOT NULL,
    revision bigint NOT NULL,
    PRIMARY KEY (bar_id)
);

COMMENT ON TABLE candles IS 'candlewax: the current (highest) revision of every candle';

CREATE INDEX IF NOT EXISTS candles_symbol_time ON candles (symbol, resolution, window_start DESC);

CREATE INDEX IF NOT EXISTS candles_time_brin ON candles USING brin (window_start);

CREATE TABLE IF NOT EXISTS quote_bars (
    symbol text NOT NULL,
    resolution text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    open double precision,
    high double precision,
    low double precision,
    close double precision,
    bid_close double precision,
    ask_close double precision,
    spread_min double precision,
    spread_max double precision,
    spread_mean double precision,
    spread_twa double precision,
    quote_count bigint NOT NULL,
    bar_id text NOT NULL,
    revision bigint NOT NULL,
    PRIMARY KEY (bar_id)
);

COMMENT ON TABLE quote_bars IS 'candlewax: the current (highest) revision of every quote bar';

CREATE INDEX IF NOT EXISTS quote_bars_symbol_time ON quote_bars (symbol, resolution, window_start DESC);

CREATE INDEX IF NOT EXISTS quote_bars_time_brin ON quote_bars USING brin (window_start);

CREATE TABLE IF NOT EXISTS drift (
    bar_id text NOT NULL,
    symbol text NOT NULL,
    resolution text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    revision bigint NOT NULL,
    late_trades bigint NOT NULL,
    max_lateness_ms bigint NOT NULL,
    emitted_missing boolean NOT NULL,
    emitted_open double precision,
    emitted_high double precision,
    emitted_low double precision,
    emitted_close double precision,
    emitted_volume double precision,
    emitted_vwap double precision,
    emitted_trade_count bigint,
    corrected_open double precision,
    corrected_high double precision,
    corrected_low double precision,
    corrected_close double precision,
    corrected_volume double precision,
    corrected_vwap double precision,
    corrected_trade_count bigint NOT NULL,
    drift_open double precision,
    drift_high double precision,
    drift_low double precision,
    drift_close double precision,
    drift_volume double precision,
    drift_vwap double precision,
    drift_trade_count double precision,
    max_drift double precision,
    drifted_fields text NOT NULL,
    alert boolean NOT NULL,
    detected_event_ts timestamptz NOT NULL,
    PRIMARY KEY (bar_id, late_trades, detected_event_ts)
);

COMMENT ON TABLE drift IS 'candlewax: every drift record; the current drift of a bar is its row with the most late_trades';

CREATE INDEX IF NOT EXISTS drift_symbol_time ON drift (symbol, window_start DESC);

CREATE INDEX IF NOT EXISTS drift_time_brin ON drift USING brin (window_start);

CREATE INDEX IF NOT EXISTS drift_alerts ON drift (detected_event_ts DESC) WHERE alert;

CREATE TABLE IF NOT EXISTS quote_drift (
    bar_id text NOT NULL,
    symbol text NOT NULL,
    resolution text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    revision bigint NOT NULL,
    late_quotes bigint NOT NULL,
    max_lateness_ms bigint NOT NULL,
    emitted_missing boolean NOT NULL,
    emitted_open double precision,
    emitted_high double precision,
    emitted_low double precision,
    emitted_close double precision,
    emitted_spread_mean double precision,
    emitted_spread_twa double precision,
    emitted_quote_count bigint,
    corrected_open double precision,
    corrected_high double precision,
    corrected_low double precision,
    corrected_close double precision,
    corrected_spread_mean double precision,
    corrected_spread_twa double precision,
    corrected_quote_count bigint NOT NULL,
    drift_open double precision,
    drift_high double precision,
    drift_low double precision,
    drift_close double precision,
    drift_spread_mean double precision,
    drift_spread_twa double precision,
    drift_quote_count double precision,
    max_drift double precision,
    drifted_fields text NOT NULL,
    alert boolean NOT NULL,
    detected_event_ts timestamptz NOT NULL,
    PRIMARY KEY (bar_id, late_quotes, detected_event_ts)
);

COMMENT ON TABLE quote_drift IS 'candlewax: every quote drift record';

CREATE INDEX IF NOT EXISTS quote_drift_symbol_time ON quote_drift (symbol, window_start DESC);

CREATE INDEX IF NOT EXISTS quote_drift_time_brin ON quote_drift USING brin (window_start);

CREATE INDEX IF NOT EXISTS quote_drift_alerts ON quote_drift (detected_event_ts DESC) WHERE alert;
