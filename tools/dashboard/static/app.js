// candlewax dashboard: candles from /api/bars (the lake and recent topics), then live
// updates as server-sent events from /api/events. Everything from the server is shown
// as text (textContent), never parsed as markup.
"use strict";

(() => {
  const LWC = window.LightweightCharts;
  const UP = "#26a69a", DOWN = "#ef5350";
  const FORMING_UP = "rgba(38,166,154,0.45)", FORMING_DOWN = "rgba(239,83,80,0.45)";
  const errors = [];
  window.addEventListener("error", (e) => errors.push(String(e.message || e)));
  window.addEventListener("unhandledrejection", (e) => errors.push(String(e.reason)));

  const $ = (id) => document.getElementById(id);
  const state = {
    config: null, symbol: null, resolution: null, source: null, loading: true,
    closed: new Map(),   // time (s) -> bar data (closed candles, highest revision)
    forming: new Map(),  // time (s) -> bar data (open windows)
    quotes: new Map(),   // time (s) -> quote bar
    volumes: new Map(),
    events: 0, formingUpdates: 0, restated: 0, lastForming: null, lastClose: null,
  };

  const chart = LWC.createChart($("chart"), {
    autoSize: true,
    layout: {
      background: { color: "#0e1117" }, textColor: "#d1d4dc", attributionLogo: true,
      panes: { separatorColor: "#30363d", separatorHoverColor: "#484f58" },
    },
    grid: { vertLines: { color: "#1c2128" }, horzLines: { color: "#1c2128" } },
    timeScale: { timeVisible: true, secondsVisible: true, borderColor: "#30363d", barSpacing: 8, rightOffset: 4 },
    rightPriceScale: { borderColor: "#30363d" },
  });
  const candles = chart.addSeries(LWC.CandlestickSeries, {
    upColor: UP, downColor: DOWN, borderVisible: false, wickUpColor: UP, wickDownColor: DOWN,
  });
  candles.priceScale().applyOptions({ scaleMargins: { top: 0.05, bottom: 0.25 } });
  const volume = chart.addSeries(LWC.HistogramSeries, {
    priceFormat: { type: "volume" }, priceScaleId: "", lastValueVisible: false, priceLineVisible: false,
  });
  volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  let spread = null;  // a pane under the chart, made when the first quote bar comes

  const time = (record) => Math.floor(record.window_start / 1000);

  function precision(price) {
    const p = Math.abs(price);
    return p >= 1000 ? 2 : p >= 1 ? 4 : p >= 0.01 ? 6 : 8;
  }

  function candleData(record, forming) {
    const up = record.close >= record.open;
    const bar = { time: time(record), open: record.open, high: record.high, low: record.low, close: record.close };
    if (forming) Object.assign(bar, { color: up ? FORMING_UP : FORMING_DOWN, wickColor: up ? FORMING_UP : FORMING_DOWN });
    return bar;
  }

  function volumeData(record, forming) {
    const up = record.close >= record.open;
    const color = forming ? "rgba(120,123,134,0.35)" : up ? "rgba(38,166,154,0.5)" : "rgba(239,83,80,0.5)";
    return { time: time(record), value: record.volume, color };
  }

  function allCandles() {
    const byTime = new Map(state.closed);
    for (const [t, bar] of state.forming) if (!byTime.has(t)) byTime.set(t, bar);
    return [...byTime.entries()].sort((a, b) => a[0] - b[0]);
  }

  function redraw() {
    const entries = allCandles();
    candles.setData(entries.map(([, b]) => b.candle));
    volume.setData(entries.map(([, b]) => b.volume));
    $("empty").hidden = entries.length > 0;
    if (entries.length) {
      const digits = precision(entries[entries.length - 1][1].candle.close);
      candles.applyOptions({ priceFormat: { type: "price", precision: digits, minMove: 10 ** -digits } });
    }
    if (spread) spread.setData([...state.quotes.entries()].sort((a, b) => a[0] - b[0]).map(([, q]) => q));
  }

  function lastTime() {
    let last = -Infinity;
    for (const t of state.closed.keys()) last = Math.max(last, t);
    for (const t of state.forming.keys()) last = Math.max(last, t);
    return last;
  }

  function show(t, entry) {
    // The newest bar (or a new one after it) updates in place; an older one redraws.
    if (t >= lastTime()) {
      candles.update(entry.candle);
      volume.update(entry.volume);
      $("empty").hidden = true;
      return true;
    }
    return false;
  }

  function onCandle(record) {
    const t = time(record);
    const previous = state.closed.get(t);
    if (previous && previous.revision > record.revision) return;
    if (previous && record.revision > previous.revision) state.restated += 1;
    const wasNewest = t >= lastTime();
    state.forming.delete(t);
    const entry = { candle: candleData(record, false), volume: volumeData(record, false), revision: record.revision };
    state.closed.set(t, entry);
    if (!(wasNewest && show(t, entry))) redraw();
    state.lastClose = record.close;
    $("last-close").textContent = `${record.symbol} ${record.resolution} close ${record.close}`;
  }

  function onForming(record) {
    const t = time(record);
    if (state.closed.has(t)) return;  // its window already closed
    const entry = { candle: candleData(record, true), volume: volumeData(record, true), revision: 0 };
    const wasNewest = t >= lastTime();
    state.forming.set(t, entry);
    if (!(wasNewest && show(t, entry))) redraw();
    state.formingUpdates += 1;
    state.lastForming = { time: t, close: record.close, high: record.high, low: record.low, trades: record.trade_count };
    const at = new Date(record.window_start).toISOString().slice(11, 19);
    $("forming").textContent = `forming ${at}: ${record.close} (${record.trade_count} trades)`;
  }

  function keepQuoteBar(record) {
    // The time-weighted spread in a pane under the candles, made with the first quote bar.
    if (!spread) {
      spread = chart.addSeries(LWC.LineSeries, { color: "#f0b429", lineWidth: 1, title: "spread (twa)" }, 1);
      chart.panes()[1].setHeight(110);
    }
    const t = time(record);
    state.quotes.set(t, { time: t, value: record.spread_twa });
    return t;
  }

  function onQuoteBar(record) {
    const t = keepQuoteBar(record);
    if (t === Math.max(...state.quotes.keys())) spread.update(state.quotes.get(t));
    else redraw();
  }

  const fmt = (n, digits = 0) => (n === null || n === undefined) ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: digits });

  function onHealth(h) {
    const t = h.trades_per_s || {};
    $("h-processes").textContent = `${h.processes_up}/${h.processes} up`;
    $("h-processes").parentElement.classList.toggle("warn", h.processes_up < h.processes);
    $("h-accepted").textContent = fmt(t.accepted);
    $("h-others").textContent = `${fmt(t.duplicate)} · ${fmt(t.late)} · ${fmt(t.rejected)}`;
    const q = h.quotes_per_s || {};
    $("h-quotes").textContent = Object.keys(q).length ? fmt(q.accepted) : "off";
    $("h-lag").textContent = fmt(h.consumer_lag);
    const reasons = Object.entries(h.rejected || {}).sort((a, b) => b[1] - a[1]).slice(0, 3);
    $("h-rejects").textContent = reasons.length ? reasons.map(([r, n]) => `${r} ${fmt(n)}`).join(", ") : "none";
    $("h-alerts").textContent = fmt(h.drift_alerts);
    $("h-alerts").parentElement.classList.toggle("warn", h.drift_alerts_per_s > 0);
    $("h-delay").textContent = h.candle_delay_p99_s === null ? "–" : `${fmt(h.candle_delay_p99_s * 1000)} ms`;
  }

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return response.json();
  }

  async function load() {
    const params = new URLSearchParams({ symbol: state.symbol, resolution: state.resolution, limit: "1500" });
    const data = await getJSON(`/api/bars?${params}`);
    state.closed.clear(); state.forming.clear(); state.quotes.clear();
    for (const r of data.candles) state.closed.set(time(r), { candle: candleData(r, false), volume: volumeData(r, false), revision: r.revision });
    for (const r of data.forming) if (!state.closed.has(time(r))) state.forming.set(time(r), { candle: candleData(r, true), volume: volumeData(r, true), revision: 0 });
    for (const r of data.quote_bars) keepQuoteBar(r);
    redraw();
    chart.timeScale().scrollToRealTime();
    const last = data.candles[data.candles.length - 1];
    $("last-close").textContent = last ? `${last.symbol} ${last.resolution} close ${last.close}` : "–";
  }

  function listen() {
    if (state.source) state.source.close();
    if (!state.config.live && !state.config.health) return;
    const params = new URLSearchParams({ symbol: state.symbol, resolution: state.resolution });
    const source = new EventSource(`/api/events?${params}`);
    state.source = source;
    const handle = (fn) => (e) => { state.events += 1; fn(JSON.parse(e.data)); };
    source.addEventListener("candle", handle(onCandle));
    source.addEventListener("forming", handle(onForming));
    source.addEventListener("quote_bar", handle(onQuoteBar));
    source.addEventListener("health", handle(onHealth));
    source.addEventListener("reset", () => load().catch(report));
    source.onopen = () => { $("connection").textContent = "live"; $("connection").className = "on"; };
    source.onerror = () => { $("connection").textContent = "reconnecting…"; $("connection").className = "off"; };
  }

  function report(error) {
    errors.push(String(error));
    $("connection").textContent = String(error.message || error);
    $("connection").className = "off";
  }

  function select(symbol, resolution) {
    // Stop the old series' events first: none may land on the new chart while it loads.
    if (state.source) { state.source.close(); state.source = null; }
    state.symbol = symbol; state.resolution = resolution; state.loading = true;
    state.closed.clear(); state.forming.clear(); state.quotes.clear(); state.lastForming = null;
    location.hash = new URLSearchParams({ symbol, resolution }).toString();
    $("symbol").value = symbol;
    for (const b of $("resolutions").children) b.setAttribute("aria-pressed", String(b.dataset.resolution === resolution));
    if (spread) { chart.removeSeries(spread); spread = null; }
    load().then(() => { state.loading = false; listen(); }).catch(report);
  }

  function fillSymbols(symbols) {
    const picker = $("symbol");
    const known = new Set([...picker.options].map((o) => o.value));
    for (const s of symbols) {
      if (known.has(s)) continue;
      const option = document.createElement("option");
      option.value = s; option.textContent = s;
      picker.appendChild(option);
    }
  }

  async function start() {
    state.config = await getJSON("/api/config");
    const wanted = new URLSearchParams(location.hash.slice(1));
    for (const r of state.config.resolutions) {
      const button = document.createElement("button");
      button.type = "button"; button.textContent = r; button.dataset.resolution = r;
      button.addEventListener("click", () => select(state.symbol, r));
      $("resolutions").appendChild(button);
    }
    $("symbol").addEventListener("change", (e) => select(e.target.value, state.resolution));
    if (!state.config.live) { $("connection").textContent = "lake only"; }
    // The flow may not have written a candle yet: look for symbols until there are some.
    while (!state.config.symbols.length) {
      $("empty").hidden = false;
      $("empty").textContent = "Waiting for the first candles…";
      await new Promise((r) => setTimeout(r, 1000));
      state.config = await getJSON("/api/config");
    }
    fillSymbols(state.config.symbols);
    const symbol = state.config.symbols.includes(wanted.get("symbol")) ? wanted.get("symbol") : state.config.symbols[0];
    const resolution = state.config.resolutions.includes(wanted.get("resolution")) ? wanted.get("resolution") : state.config.resolutions[0];
    select(symbol, resolution);
    setInterval(() => getJSON("/api/config").then((c) => fillSymbols(c.symbols)).catch(report), 10000);
  }

  // What a test (or a curious person in the console) can read back.
  window.candlewax = {
    state: () => ({
      symbol: state.symbol, resolution: state.resolution, loading: state.loading,
      closed: state.closed.size, forming: state.forming.size, quoteBars: state.quotes.size,
      lastForming: state.lastForming, lastClose: state.lastClose,
      events: state.events, formingUpdates: state.formingUpdates, restated: state.restated,
      lastTime: lastTime(), errors: [...errors],
    }),
  };

  start().catch(report);
})();
