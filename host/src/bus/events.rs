//! The event publisher: events, errors, command acknowledgements and heartbeats
//! on `<prefix>:events`, scrubbed of secrets and capped in length.

use serde_json::{Value, json};

use crate::bus::Bus;
use crate::bus::message::{MAX_ID_CHARS, envelope, event_id, printable};
use crate::domain::secret::scrub;
use crate::domain::time::now_ms;

/// The events of the order side, typed: each is published on
/// `<prefix>:events` as `{"event": "<name>", …its fields…, "role": …}`, and
/// with `"alert": true` when [`Event::is_alert`] (Telegram and the monitor
/// raise those). Prices and quantities are decimal text, as in the order messages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[allow(missing_docs)] // fields are named as published; each variant says what they mean
pub enum Event {
    /// A signal no account can take (its pipeline is not configured).
    SignalRefused {
        signal_id: String,
        reason: String,
        rule: String,
    },
    /// An account's decision on a signal was a refusal, by `rule`.
    OrderRefused {
        signal_id: String,
        account: String,
        reason: String,
        rule: String,
    },
    /// The daily loss limit was reached: only reducing orders until tomorrow.
    RiskBreaker {
        account: String,
        rule: String,
        daily_pnl: String,
        detail: String,
    },
    /// A report the order's state machine cannot take (recorded nowhere).
    OrderTransitionRefused {
        client_order_id: String,
        reason: String,
    },
    /// The broker rejected an order.
    OrderRejected {
        client_order_id: String,
        reason: String,
    },
    /// A managed exit fired: the closing order is recorded.
    ExitTriggered {
        account: String,
        instrument: String,
        reason: String,
        stop: Option<String>,
        target: Option<String>,
        price: String,
        qty: String,
    },
    /// An intraday position is closed at its square-off (`reason`: `square-off` or `carried`).
    SquareOff {
        account: String,
        instrument: String,
        reason: String,
        price: Option<String>,
        qty: String,
        due: i64,
    },
    /// An intraday position was left open past its session and is closed at the open.
    PositionCarried {
        account: String,
        instrument: String,
        reason: String,
        price: Option<String>,
        qty: String,
        due: i64,
        detail: String,
    },
    /// New terms for a working order: a protective stop tightened (taken by the broker), or a
    /// `modify` command (`by` its id) applied on paper or handed to the broker.
    OrderModified {
        account: String,
        client_order_id: String,
        order_type: String,
        trigger: Option<String>,
        price: Option<String>,
        qty: String,
        by: Option<String>,
    },
    /// A broker-side protective stop was recorded for a live position (or moved).
    ProtectiveStop {
        account: String,
        instrument: String,
        client_order_id: String,
        trigger: String,
        qty: String,
        action: String,
    },
    /// The broker refused a position's protective stop. `permanent` (its type, a price band,
    /// margin): not placed again for this position, the broker holds no stop and the host's
    /// managed exit guards it; else placed again after a back-off.
    ProtectiveStopRefused {
        account: String,
        instrument: String,
        client_order_id: String,
        reason: String,
        permanent: bool,
        detail: String,
    },
    /// The broker refused new terms for a working order: it still holds `held_trigger`
    /// (and `held_price`), not the `wanted_trigger` the host asked for.
    OrderModifyRefused {
        account: String,
        instrument: String,
        client_order_id: String,
        reason: String,
        held_trigger: Option<String>,
        held_price: Option<String>,
        wanted_trigger: Option<String>,
        detail: String,
    },
    /// An order above its instrument's freeze quantity goes out as `slices` child orders.
    OrderSliced {
        client_order_id: String,
        account: String,
        instrument: String,
        qty: String,
        slices: usize,
        freeze_qty: u64,
    },
    /// A basket's buy legs are sent.
    BasketPlaced {
        basket: String,
        account: String,
        legs: usize,
    },
    /// Every leg of a basket filled.
    BasketComplete { basket: String, account: String },
    /// A one-order basket (a manual ticket) whose order a trader cancelled: over, not failed.
    BasketCancelled {
        basket: String,
        account: String,
        reason: String,
    },
    /// A basket could not be placed or a leg was refused; `unwinding`: the filled legs being closed.
    BasketFailed {
        basket: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<String>,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unwinding: Option<Vec<String>>,
    },
    /// The orders service is up: its consumer name, journal, mode, kill switch and where the price stream resumes.
    OrdersStarted {
        consumer: String,
        journal: String,
        mode: String,
        kill_switch: bool,
        price_cursor: Option<String>,
    },
    /// A price the guard refused (never applied to a fill, a stop or a mark).
    PriceRefused {
        source: String,
        message: String,
        instrument: String,
        field: String,
        reason: String,
    },
    /// A move beyond the price band believed as real (held long enough, or the first
    /// price after a silence): the band's level moved with it.
    PriceGap {
        source: String,
        instrument: String,
        from: String,
        to: String,
        why: String,
    },
    /// A date in a year no calendar file covers: its holidays are not known.
    CalendarUnknownYear {
        year: i64,
        policy: String,
        known: Vec<i64>,
        seen_in: String,
        detail: String,
    },
    /// A date in a year whose calendar file is provisional (not yet the exchange's list).
    CalendarProvisional {
        year: i64,
        seen_in: String,
        detail: String,
    },
    /// The disk under the journal is full: nothing can be recorded, so nothing is decided or
    /// sent until space is made; the write is retried meanwhile.
    JournalFull {
        journal: String,
        item: String,
        error: String,
    },
    /// A journal write failed for good: the item is set aside, not retried.
    Parked {
        item: String,
        error: String,
        detail: String,
    },
    /// A live account's position differs between the journal and the broker.
    PositionMismatch {
        account: String,
        broker: String,
        instrument: String,
        journal: String,
        broker_qty: String,
    },
    /// The journal held more than the broker and was brought down to the broker's position
    /// by the adjustment order `client_order_id`, booked at `price`.
    PositionResolved {
        account: String,
        instrument: String,
        journal: String,
        broker_qty: String,
        client_order_id: String,
        price: String,
        detail: String,
    },
    /// The positions of a live account could not be compared with its broker's.
    ReconcileFailed {
        account: String,
        broker: String,
        error: String,
    },
    /// The broker refused the account's session: its orders are held until a new token.
    TokenExpired {
        account: String,
        broker: String,
        reason: String,
        detail: String,
    },
    /// A new token works: the account trades again.
    TokenRenewed { account: String, broker: String },
    /// A token handed over by a command was refused by the broker.
    TokenRefused {
        account: String,
        broker: String,
        reason: String,
    },
    /// The broker reports an order complete without an average price: nothing is journaled until it gives one.
    OrderUnpriced {
        account: String,
        client_order_id: String,
        detail: String,
    },
    /// A broker call failed in a way that is retried, after `wait_ms`.
    BrokerRetry {
        account: String,
        client_order_id: String,
        reason: String,
        wait_ms: u64,
    },
    /// A live account's broker did not answer its session check at start (refused
    /// connection, timeout, 5xx, 429): the start waits and asks again after `wait_ms`.
    BrokerUnreachable {
        account: String,
        broker: String,
        reason: String,
        attempt: u32,
        wait_ms: u64,
    },
    /// A live account's working orders were read against its broker's book after its order
    /// stream (re)connected; decisions waited for it (`complete`: every order was read).
    OrdersSynced {
        account: String,
        broker: String,
        orders: usize,
        complete: bool,
        waited_ms: u64,
    },
    /// Decisions stopped waiting for an account's order sync after `waited_ms` (its broker is slow).
    OrderSyncOverdue {
        account: String,
        waited_ms: u64,
        detail: String,
    },
    /// A level watcher is armed: when `instrument` crosses `level` (`direction`), `order` is placed.
    WatcherArmed {
        watch_id: String,
        account: String,
        instrument: String,
        level: String,
        direction: String,
        order: String,
    },
    /// A level watcher fired: its order is placed (as the one-leg basket `watch_id`).
    WatcherFired {
        watch_id: String,
        account: String,
        instrument: String,
        level: String,
        direction: String,
        price: String,
    },
    /// A level watcher was disarmed before it fired.
    WatcherCancelled { watch_id: String, account: String },
    /// Someone did something in the web console (`access`: their role; `action`: `login`, `logout`, a command, `order`, `basket`).
    ConsoleAction {
        user: String,
        access: String,
        action: String,
        detail: String,
    },
    /// A console login was refused (a wrong password, an unknown user, too many tries).
    ConsoleLoginRefused {
        user: String,
        from: String,
        reason: String,
    },
    /// The kill switch was set or released by a command.
    KillSwitch { on: bool, command_id: String },
    /// A pipeline's plugin instance is up.
    PluginLoaded {
        pipeline: String,
        plugin: String,
        version: String,
        sha256: String,
        file: String,
        from_cache: bool,
    },
    /// A pipeline started on its source.
    PipelineStarted {
        pipeline: String,
        symbols: Vec<String>,
        source: String,
    },
    /// A pipeline waits for its plugin (missing or refused).
    PipelineWaiting {
        pipeline: String,
        plugin: String,
        reason: String,
    },
    /// A pipeline was paused by a command: it emits no signals.
    PipelinePaused { pipeline: String },
    /// A paused pipeline resumed.
    PipelineResumed { pipeline: String },
    /// A pipeline's source ran out.
    PipelineFinished {
        pipeline: String,
        events_in: u64,
        signals_out: u64,
        events_skipped: u64,
        swaps: u64,
        restarts: u64,
    },
    /// A pipeline was stopped.
    PipelineStopped {
        pipeline: String,
        events_in: u64,
        signals_out: u64,
        events_skipped: u64,
        swaps: u64,
        restarts: u64,
    },
    /// A pipeline's source could not run (`kind`: `data` or `feed`).
    PipelineFailed {
        pipeline: String,
        reason: String,
        kind: String,
    },
    /// A plugin file left the plugin folder.
    PluginRemoved { file: String },
    /// A plugin file, or a new version for a pipeline, was refused; the old one runs on.
    PluginRefused {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pipeline: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        reason: String,
    },
    /// A plugin file was checked and compiled.
    PluginRegistered {
        file: String,
        sha256: String,
        contract: String,
        from_cache: bool,
    },
    /// A plugin failed on an event: quarantined, retried after the back-off.
    PluginFailed {
        pipeline: String,
        error: String,
        quarantined_for_ms: u64,
    },
    /// A quarantined plugin is back, warmed up with the recent events.
    PluginRestarted {
        pipeline: String,
        warmed_up_with: usize,
    },
    /// A pipeline's plugin was swapped while it ran, its state carried (`state` says how).
    PluginSwapped {
        pipeline: String,
        cause: String,
        old_version: Option<String>,
        new_version: String,
        old_sha256: String,
        new_sha256: String,
        state: String,
        pause_us: u64,
    },
    /// A new configuration was applied: the pipelines added, removed, updated in place and restarted.
    ConfigApplied {
        added: Vec<String>,
        removed: Vec<String>,
        updated: Vec<String>,
        restarted: Vec<String>,
    },
    /// A configuration edit was refused at its place; the running one is untouched.
    ConfigRefused {
        file: String,
        error: String,
        line: usize,
        column: usize,
        field: String,
    },
    /// A pipeline's outbox reached the bus again after failures.
    BusRecovered {
        pipeline: String,
        retries: u64,
        still_buffered: usize,
    },
    /// An entry signal was held because its market feed is stale.
    EntryHeld {
        pipeline: String,
        instrument: String,
        side: String,
        reason: String,
    },
    /// Redis was unreachable for `down_ms` and is back; the streams resumed.
    RedisOutage { down_ms: u64, detail: String },
    /// A broker's instrument master was loaded.
    InstrumentsRefreshed { broker: String, instruments: usize },
    /// A broker's instrument master could not be loaded.
    InstrumentsRefreshFailed { broker: String, error: String },
    /// A broker feed's connection is up (the first time).
    FeedConnected {
        account: String,
        broker: String,
        connection: usize,
        connections: usize,
        instruments: usize,
    },
    /// A broker feed's connection is up again and subscribed again.
    FeedReconnected {
        account: String,
        broker: String,
        connection: usize,
        connections: usize,
        instruments: usize,
    },
    /// A broker feed's connection dropped (it is made again).
    FeedDown {
        account: String,
        broker: String,
        connection: usize,
        reason: String,
    },
    /// The first tick after a reconnect: the bar in progress at the drop (`straddles`: the
    /// same bar goes on) and how many whole bars had no tick.
    FeedGap {
        account: String,
        instrument: String,
        bar_ts: i64,
        straddles: bool,
        bars_missed: i64,
    },
    /// Bars with no tick while the feed was down, read back from the broker and handed on.
    FeedBackfilled {
        account: String,
        instrument: String,
        from: i64,
        to: i64,
        bars: usize,
    },
    /// A broker feed silent for `silent_secs` in market hours: new entries on its instruments are held.
    FeedStale {
        account: String,
        broker: String,
        silent_secs: u64,
        instruments: usize,
    },
    /// Ticks came again after a stale spell.
    FeedFresh { account: String, broker: String },
    /// The options around the money changed with the spot (subscribed on the feed).
    StrikesMoved {
        account: String,
        underlying: String,
        spot: String,
        options: Vec<String>,
    },
    /// An order update arrived on a market-data connection (kept for the record; the order stream acts on them).
    BrokerOrderUpdate { account: String, update: Value },
    /// A live account's order stream is up (`reconnect`: again).
    OrderStreamConnected { account: String, reconnect: bool },
    /// A live account's order stream dropped (it is made again; polling goes on).
    OrderStreamDown { account: String, reason: String },
    /// A live account's broker pushed an order update (the router reads the order now).
    OrderUpdate {
        account: String,
        order_id: Value,
        status: Value,
        tag: Value,
    },
    /// Something a feed, an order stream or the recorder could not use; the rest goes on.
    /// Published as `error`, with how many of its kind came since the last report where counted.
    #[serde(rename = "error")]
    FeedError {
        source: String,
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        malformed_frames: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused_ticks: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failures: Option<u64>,
    },
}

impl Event {
    /// The warning of a date in `year`, which `calendar` has no file for, seen in `seen_in`.
    #[must_use]
    pub fn unknown_year(
        year: i64,
        calendar: &crate::domain::calendar::Calendar,
        seen_in: &str,
    ) -> Self {
        let policy = calendar.unknown_year();
        let detail = match policy {
            crate::domain::calendar::UnknownYear::Weekdays => format!(
                "no trading calendar for {year}: every weekday is taken as a regular session and its holidays are not known; add calendars/nse-{year}.toml ([market] calendars)"
            ),
            crate::domain::calendar::UnknownYear::Refuse => format!(
                "no trading calendar for {year}: no entries are taken ([market] unknown_year = \"refuse\"); add calendars/nse-{year}.toml ([market] calendars)"
            ),
        };
        Self::CalendarUnknownYear {
            year,
            policy: policy.as_str().to_owned(),
            known: calendar.years(),
            seen_in: seen_in.to_owned(),
            detail,
        }
    }

    /// What the host knows of the calendar of IST day `day`, when it is not the exchange's
    /// own list: the warning of a year without a file, or of a provisional one.
    #[must_use]
    pub fn calendar_doubt(
        calendar: &crate::domain::calendar::Calendar,
        day: i64,
        seen_in: &str,
    ) -> Option<(i64, Self)> {
        if let Some(year) = calendar.unknown_year_of(day) {
            return Some((year, Self::unknown_year(year, calendar, seen_in)));
        }
        let year = calendar.provisional_year_of(day)?;
        Some((
            year,
            Self::CalendarProvisional {
                year,
                seen_in: seen_in.to_owned(),
                detail: format!(
                    "the trading calendar for {year} is provisional (derived before NSE's holiday circular): check calendars/nse-{year}.toml against the circular"
                ),
            },
        ))
    }

    /// A feed's `error` report with no count.
    #[must_use]
    pub fn feed_error(source: impl Into<String>, error: impl Into<String>) -> Self {
        Self::FeedError {
            source: source.into(),
            error: error.into(),
            malformed_frames: None,
            refused_ticks: None,
            failures: None,
        }
    }
}

impl Event {
    /// The event's name, as published.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::SignalRefused { .. } => "signal_refused",
            Self::OrderRefused { .. } => "order_refused",
            Self::RiskBreaker { .. } => "risk_breaker",
            Self::OrderTransitionRefused { .. } => "order_transition_refused",
            Self::OrderRejected { .. } => "order_rejected",
            Self::ExitTriggered { .. } => "exit_triggered",
            Self::SquareOff { .. } => "square_off",
            Self::PositionCarried { .. } => "position_carried",
            Self::OrderSliced { .. } => "order_sliced",
            Self::OrderModified { .. } => "order_modified",
            Self::ProtectiveStop { .. } => "protective_stop",
            Self::ProtectiveStopRefused { .. } => "protective_stop_refused",
            Self::OrderModifyRefused { .. } => "order_modify_refused",
            Self::BasketPlaced { .. } => "basket_placed",
            Self::BasketComplete { .. } => "basket_complete",
            Self::BasketCancelled { .. } => "basket_cancelled",
            Self::BasketFailed { .. } => "basket_failed",
            Self::OrdersStarted { .. } => "orders_started",
            Self::PriceRefused { .. } => "price_refused",
            Self::PriceGap { .. } => "price_gap",
            Self::CalendarUnknownYear { .. } => "calendar_unknown_year",
            Self::CalendarProvisional { .. } => "calendar_provisional",
            Self::JournalFull { .. } => "journal_full",
            Self::Parked { .. } => "parked",
            Self::PositionMismatch { .. } => "position_mismatch",
            Self::PositionResolved { .. } => "position_resolved",
            Self::ReconcileFailed { .. } => "reconcile_failed",
            Self::TokenExpired { .. } => "token_expired",
            Self::TokenRenewed { .. } => "token_renewed",
            Self::TokenRefused { .. } => "token_refused",
            Self::OrderUnpriced { .. } => "order_unpriced",
            Self::BrokerRetry { .. } => "broker_retry",
            Self::BrokerUnreachable { .. } => "broker_unreachable",
            Self::OrdersSynced { .. } => "orders_synced",
            Self::OrderSyncOverdue { .. } => "order_sync_overdue",
            Self::FeedConnected { .. } => "feed_connected",
            Self::FeedReconnected { .. } => "feed_reconnected",
            Self::FeedDown { .. } => "feed_down",
            Self::FeedGap { .. } => "feed_gap",
            Self::FeedBackfilled { .. } => "feed_backfilled",
            Self::FeedStale { .. } => "feed_stale",
            Self::FeedFresh { .. } => "feed_fresh",
            Self::StrikesMoved { .. } => "strikes_moved",
            Self::BrokerOrderUpdate { .. } => "broker_order_update",
            Self::OrderStreamConnected { .. } => "order_stream_connected",
            Self::OrderStreamDown { .. } => "order_stream_down",
            Self::OrderUpdate { .. } => "order_update",
            Self::FeedError { .. } => "error",
            Self::WatcherArmed { .. } => "watcher_armed",
            Self::WatcherFired { .. } => "watcher_fired",
            Self::WatcherCancelled { .. } => "watcher_cancelled",
            Self::ConsoleAction { .. } => "console_action",
            Self::ConsoleLoginRefused { .. } => "console_login_refused",
            Self::KillSwitch { .. } => "kill_switch",
            Self::PluginLoaded { .. } => "plugin_loaded",
            Self::PipelineStarted { .. } => "pipeline_started",
            Self::PipelineWaiting { .. } => "pipeline_waiting",
            Self::PipelinePaused { .. } => "pipeline_paused",
            Self::PipelineResumed { .. } => "pipeline_resumed",
            Self::PipelineFinished { .. } => "pipeline_finished",
            Self::PipelineStopped { .. } => "pipeline_stopped",
            Self::PipelineFailed { .. } => "pipeline_failed",
            Self::PluginRemoved { .. } => "plugin_removed",
            Self::PluginRefused { .. } => "plugin_refused",
            Self::PluginRegistered { .. } => "plugin_registered",
            Self::PluginFailed { .. } => "plugin_failed",
            Self::PluginRestarted { .. } => "plugin_restarted",
            Self::PluginSwapped { .. } => "plugin_swapped",
            Self::ConfigApplied { .. } => "config_applied",
            Self::ConfigRefused { .. } => "config_refused",
            Self::BusRecovered { .. } => "bus_recovered",
            Self::EntryHeld { .. } => "entry_held",
            Self::RedisOutage { .. } => "redis_outage",
            Self::InstrumentsRefreshed { .. } => "instruments_refreshed",
            Self::InstrumentsRefreshFailed { .. } => "instruments_refresh_failed",
        }
    }

    /// Whether a trader must be told (an alert).
    #[must_use]
    pub const fn is_alert(&self) -> bool {
        matches!(
            self,
            Self::OrderRejected { .. }
                | Self::ProtectiveStopRefused {
                    permanent: true,
                    ..
                }
                | Self::OrderModifyRefused { .. }
                | Self::PositionCarried { .. }
                | Self::BasketFailed { .. }
                | Self::RiskBreaker { .. }
                | Self::Parked { .. }
                | Self::PositionMismatch { .. }
                | Self::PositionResolved { .. }
                | Self::ReconcileFailed { .. }
                | Self::TokenExpired { .. }
                | Self::TokenRefused { .. }
                | Self::OrderUnpriced { .. }
                | Self::OrderSyncOverdue { .. }
                | Self::FeedStale { .. }
                | Self::PipelineFailed { .. }
                | Self::RedisOutage { .. }
                | Self::InstrumentsRefreshFailed { .. }
                | Self::JournalFull { .. }
        )
    }

    /// Its fields as published (without the role), `event` included.
    #[must_use]
    pub fn fields(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| json!({ "event": self.name() }));
        if self.is_alert()
            && let Some(o) = v.as_object_mut()
        {
            o.insert("alert".into(), json!(true));
        }
        v
    }
}

/// Publishes events for one role of the process.
#[derive(Debug, Clone)]
pub struct Events {
    bus: Bus,
    role: &'static str,
}

impl Events {
    /// Events from `role` (`engine`, `orders`, `host`) on `bus`.
    #[must_use]
    pub fn new(bus: Bus, role: &'static str) -> Self {
        Self { bus, role }
    }

    /// The bus events go to.
    #[must_use]
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Publish event `name` with `fields` (a JSON object); also logged.
    pub async fn emit(&self, name: &str, fields: Value) {
        let mut body = json!({ "event": name, "role": self.role });
        if let (Some(b), Value::Object(f)) = (body.as_object_mut(), fields) {
            b.extend(f);
        }
        let body = scrub_value(body);
        tracing::info!(target: "events", event = name, "{body}");
        let msg = envelope("event", &event_id(self.role), now_ms(), body);
        if let Err(e) = self.bus.publish(&self.bus.channels().events(), &msg).await {
            tracing::warn!("could not publish event {name}: {e}");
        }
    }

    /// Publish a typed event.
    pub async fn publish(&self, event: &Event) {
        self.emit(event.name(), event.fields()).await;
    }

    /// Publish an `error` message: malformed input, a failure that changed nothing.
    pub async fn error(&self, source: &str, reason: &str) {
        let reason = &printable(&scrub(reason), EVENT_TEXT_CHARS);
        let source = &printable(source, EVENT_TEXT_CHARS);
        tracing::warn!(target: "events", source, "{reason}");
        let msg = envelope(
            "error",
            &event_id(self.role),
            now_ms(),
            json!({ "source": source, "reason": reason, "role": self.role }),
        );
        let _ = self.bus.publish(&self.bus.channels().events(), &msg).await;
    }

    /// Acknowledge a command.
    pub async fn ack(&self, command_id: &str, cmd: &str, ok: bool, detail: &str) {
        let detail = &printable(&scrub(detail), EVENT_TEXT_CHARS);
        let (command_id, cmd) = (
            &printable(&scrub(command_id), MAX_ID_CHARS),
            &printable(cmd, MAX_ID_CHARS),
        );
        let msg = envelope(
            "command_ack",
            &format!("ack/{command_id}/{}", self.role),
            now_ms(),
            json!({ "command_id": command_id, "cmd": cmd, "ok": ok, "detail": detail, "role": self.role }),
        );
        tracing::info!(target: "events", command_id, cmd, ok, "{detail}");
        let _ = self.bus.publish(&self.bus.channels().events(), &msg).await;
    }

    /// Publish a heartbeat with `body` (counters, P&L, pipeline states).
    pub async fn heartbeat(&self, body: Value) {
        let mut b = json!({ "role": self.role, "redis_reconnects": self.bus.reconnects() });
        if let (Some(m), Value::Object(f)) = (b.as_object_mut(), body) {
            m.extend(f);
        }
        let msg = envelope("heartbeat", &event_id(self.role), now_ms(), b);
        let _ = self.bus.publish(&self.bus.channels().events(), &msg).await;
    }
}

/// Longest string an event carries: an event echoes input (a command id, a
/// broker's error text), and a 10 MB id must not become a 20 MB event.
const EVENT_TEXT_CHARS: usize = 2_000;

/// `v` with every string scrubbed of known secrets (first: a cut could split
/// a secret so that the scrubber no longer sees it), then made printable and capped.
fn scrub_value(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(printable(&scrub(&s), EVENT_TEXT_CHARS)),
        Value::Array(a) => Value::Array(a.into_iter().map(scrub_value).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, scrub_value(v))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_events_publish_the_fields_they_always_had_and_read_back() {
        let square_off = Event::SquareOff {
            account: "a".into(),
            instrument: "NIFTY".into(),
            reason: "square-off".into(),
            price: None,
            qty: "75".into(),
            due: 1_704_188_700_000,
        };
        assert_eq!(
            square_off.fields(),
            json!({ "event": "square_off", "account": "a", "instrument": "NIFTY", "reason": "square-off", "price": null, "qty": "75", "due": 1_704_188_700_000_i64 })
        );
        let failed = Event::BasketFailed {
            basket: "b1".into(),
            account: None,
            reason: "unknown account \"x\"".into(),
            unwinding: None,
        };
        assert_eq!(
            failed.fields(),
            json!({ "event": "basket_failed", "basket": "b1", "reason": "unknown account \"x\"", "alert": true })
        );
        let rejected = Event::OrderRejected {
            client_order_id: "th1".into(),
            reason: "margin".into(),
        };
        assert_eq!(rejected.fields()["alert"], true);
        let refused = Event::OrderRefused {
            signal_id: "s".into(),
            account: "a".into(),
            reason: "r".into(),
            rule: "cooldown".into(),
        };
        assert!(
            refused.fields().get("alert").is_none(),
            "a refusal is an event, not an alert"
        );
        // The feeds' reports: the stale alert, and an `error` with its count only where counted.
        let stale = Event::FeedStale {
            account: "kite-1".into(),
            broker: "kite".into(),
            silent_secs: 12,
            instruments: 3,
        };
        assert_eq!(
            stale.fields(),
            json!({ "event": "feed_stale", "account": "kite-1", "broker": "kite", "silent_secs": 12, "instruments": 3, "alert": true })
        );
        let malformed = Event::FeedError {
            source: "kite feed of kite-1".into(),
            error: "13 bytes".into(),
            malformed_frames: Some(2),
            refused_ticks: None,
            failures: None,
        };
        assert_eq!(
            malformed.fields(),
            json!({ "event": "error", "source": "kite feed of kite-1", "error": "13 bytes", "malformed_frames": 2 })
        );
        assert_eq!(
            Event::feed_error("recorder", "disk full").fields(),
            json!({ "event": "error", "source": "recorder", "error": "disk full" })
        );
        for e in [square_off, failed, rejected, refused, malformed] {
            assert_eq!(e.fields()["event"], e.name());
            let back: Event = serde_json::from_value(e.fields()).unwrap();
            assert_eq!(back, e, "a consumer reads it back typed");
        }
    }
}
