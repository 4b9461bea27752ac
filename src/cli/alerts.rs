//! The flags of alerts on `fusion serve` (issue #13, item 2), and the
//! alert service they configure. Holds no logic of its own.

use std::time::Duration;

use crate::alerts::AlertConfig;

/// How alert rules are evaluated and their webhooks delivered.
#[derive(Debug, Clone, clap::Args)]
pub struct AlertArgs {
    /// Seconds between sweeps of every alert rule (decay alone crosses
    /// thresholds; changes are evaluated as they come)
    #[arg(long, default_value_t = 60.0, value_parser = super::serve::seconds)]
    pub alert_sweep: f64,
    /// Allow webhooks to loopback, private and link-local addresses (tests,
    /// private networks); refused by default against request forgery
    #[arg(long)]
    pub allow_private_webhooks: bool,
    /// Tries of a webhook delivery before it is dead
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_max_tries: u32,
    /// Seconds before the first retry of a webhook; each further one doubles
    /// it (up to an hour), with jitter
    #[arg(long, default_value_t = 10.0, value_parser = super::serve::seconds)]
    pub webhook_backoff: f64,
    /// Seconds a webhook receiver has to answer one try
    #[arg(long, default_value_t = 10.0, value_parser = super::serve::seconds)]
    pub webhook_timeout: f64,
}

impl AlertArgs {
    pub fn config(&self) -> AlertConfig {
        let secs = Duration::from_secs_f64;
        AlertConfig {
            sweep: secs(self.alert_sweep),
            allow_private: self.allow_private_webhooks,
            max_tries: self.webhook_max_tries,
            backoff: secs(self.webhook_backoff),
            timeout: secs(self.webhook_timeout),
            ..AlertConfig::default()
        }
    }
}
