//! What the chaos suite does to the pipeline, and when: the schedule of faults over the planned
//! push, and how each one is carried out.
//!
//! Faults: `kill -9` of an instance of each processor (started again at once); the broker
//! restarted (`dev/down kafka` + `dev/up`), or on the three-broker cluster the node leading
//! `parsed` partition 0 `kill -9`ed and started again (`dev/up --cluster`); the registry
//! restarted; the CRM answering short bursts of 429 and 503; with `instances` > 1, every stream
//! processor scaled out one instance at a time to `instances` and back to one, the way an
//! autoscaler follows lag; with `zombie`, one instance of each stateful processor frozen
//! (SIGSTOP) that long and continued — longer than the group's session timeout, so its
//! partitions move on and its open transaction is fenced; with `crm_outage`, the CRM unreachable
//! (connections refused) for a third of it, then answering 503, then 429 with `Retry-After`;
//! with `registry_outage`, the schema registry stopped (`dev/down registry`) that long and started
//! again (`dev/up`); with `kafka_outage`, every broker unavailable that long: the single broker
//! stopped cleanly (`dev/down kafka`) and started again, or on the cluster all three nodes
//! `kill -9`ed at once and started again (`dev/up --cluster`).

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

use super::ChaosOptions;
use crate::crm::Burst;
use crate::pipeline::{PROCESSORS, STREAM_PROCESSORS};

/// The processors whose state a zombie could corrupt: the resolver's dedupe store and thread
/// links, the scorer's tables, the sink's CRM writes.
pub const STATEFUL: [&str; 3] = ["resolver", "scorer", "crm-sink"];

#[derive(Debug, Clone)]
pub(super) enum Event {
    Kill(&'static str),
    RestartBroker,
    RestartRegistry,
    /// The registry stopped this long, then started again.
    RegistryOutage(Duration),
    /// Every broker stopped this long, then started again.
    KafkaOutage(Duration),
    Burst(Burst, Duration),
    /// Scale a stream processor to this many instances.
    Scale(&'static str, usize),
    Freeze(&'static str),
    Thaw(&'static str),
    /// The CRM refuses connections from now on ...
    CrmCut,
    /// ... until this; then 503 and 429 for the given lengths.
    CrmRestore {
        unavailable: Duration,
        too_many: Duration,
    },
}

/// The faults of a run, at offsets from the start of the push, in time order.
pub(super) fn schedule(o: &ChaosOptions, rng: &mut StdRng) -> Vec<(Duration, Event)> {
    let planned = o.emails as f64 / o.rate.max(1.0);
    let at = |rng: &mut StdRng, lo: f64, hi: f64| {
        Duration::from_secs_f64(planned * rng.random_range(lo..hi))
    };
    let mut events = Vec::new();
    for name in PROCESSORS {
        for _ in 0..o.kills_per_processor {
            events.push((at(rng, 0.02, 1.0), Event::Kill(name)));
        }
    }
    if o.restart_broker {
        events.push((at(rng, 0.2, 0.45), Event::RestartBroker));
    }
    if o.restart_registry {
        events.push((at(rng, 0.5, 0.8), Event::RestartRegistry));
    }
    // Early, so traffic is still coming when they end (the dependency's restarts wait for
    // each other): the brokers first (the push stalls at ingest meanwhile, and flows again
    // after), then the registry.
    if !o.kafka_outage.is_zero() {
        events.push((at(rng, 0.1, 0.2), Event::KafkaOutage(o.kafka_outage)));
    }
    if !o.registry_outage.is_zero() {
        events.push((at(rng, 0.2, 0.3), Event::RegistryOutage(o.registry_outage)));
    }
    for _ in 0..o.bursts {
        let length = Duration::from_millis(rng.random_range(1_000..3_000));
        let burst = Burst::TooMany {
            retry_after_secs: 1,
        };
        events.push((at(rng, 0.0, 1.0), Event::Burst(burst, length)));
        let length = Duration::from_millis(rng.random_range(500..1_500));
        events.push((at(rng, 0.0, 1.0), Event::Burst(Burst::Unavailable, length)));
    }
    // Out one instance at a time over the first half of the push, back in over the second.
    if o.instances > 1 {
        let steps = o.instances - 1;
        for name in STREAM_PROCESSORS {
            for k in 0..steps {
                let (lo, hi) = step_window(k, steps, 0.05, 0.45);
                events.push((at(rng, lo, hi), Event::Scale(name, k + 2)));
                let (lo, hi) = step_window(k, steps, 0.55, 0.95);
                events.push((at(rng, lo, hi), Event::Scale(name, o.instances - k - 1)));
            }
        }
    }
    if !o.zombie.is_zero() {
        for name in STATEFUL {
            let start = at(rng, 0.3, 0.6);
            events.push((start, Event::Freeze(name)));
            events.push((start + o.zombie, Event::Thaw(name)));
        }
    }
    if !o.crm_outage.is_zero() {
        let third = o.crm_outage / 3;
        let start = at(rng, 0.1, 0.3);
        events.push((start, Event::CrmCut));
        events.push((
            start + third,
            Event::CrmRestore {
                unavailable: third,
                too_many: o.crm_outage - 2 * third,
            },
        ));
    }
    // Stable: a scale-out and a scale-in drawn at the same instant keep their order.
    events.sort_by_key(|(t, _)| *t);
    events
}

/// The `k`th of `steps` equal slices of the fraction range `lo..hi` of the push.
fn step_window(k: usize, steps: usize, lo: f64, hi: f64) -> (f64, f64) {
    let width = (hi - lo) / steps as f64;
    (lo + width * k as f64, lo + width * (k + 1) as f64)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn every_stream_processor_goes_out_to_the_most_instances_and_back_to_one() {
        let o = ChaosOptions {
            instances: 3,
            zombie: Duration::from_secs(20),
            crm_outage: Duration::from_secs(60),
            registry_outage: Duration::from_secs(20),
            kafka_outage: Duration::from_secs(15),
            ..ChaosOptions::small()
        };
        let events = schedule(&o, &mut StdRng::seed_from_u64(1));
        for name in STREAM_PROCESSORS {
            let sizes: Vec<usize> = events
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::Scale(n, size) if *n == name => Some(*size),
                    _ => None,
                })
                .collect();
            assert_eq!(sizes, vec![2, 3, 2, 1], "{name}");
        }
        let froze: Vec<_> = events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Freeze(_)))
            .collect();
        assert_eq!(froze.len(), STATEFUL.len());
        let cut = events.iter().position(|(_, e)| matches!(e, Event::CrmCut));
        let back = events
            .iter()
            .position(|(_, e)| matches!(e, Event::CrmRestore { .. }));
        assert!(cut < back && cut.is_some(), "cut, then restored");
        let outages: Vec<_> = events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::KafkaOutage(d) => Some(("kafka", *d)),
                Event::RegistryOutage(d) => Some(("registry", *d)),
                _ => None,
            })
            .collect();
        assert_eq!(
            outages,
            vec![
                ("kafka", Duration::from_secs(15)),
                ("registry", Duration::from_secs(20))
            ]
        );
    }
}
