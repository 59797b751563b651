//! Fair shares of the global rate: a pure function, recomputed by the RateLimiter
//! actor every tick from what each connection used and whether it waited.
//!
//! Weighted max-min fairness by water-filling: connections are served in order of
//! how little they claim per unit of weight; each gets the smaller of its claim and
//! an equal (weighted) part of what is left. So a connection that uses little keeps
//! what it uses and the rest goes to the busy ones, and busy ones split the rest in
//! proportion to their weights. What nobody claims is then spread over everyone
//! (up to their own caps) as headroom, so a quiet connection can speed up before
//! the next tick sees it busy.

/// One connection's claim on the global rate, in bytes per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Its weight, at least 1.
    pub weight: u32,
    /// Its own per-connection rate: it never gets more.
    pub cap: u64,
    /// What it can use now: its cap when it waited for its bucket during the last
    /// tick, otherwise a little more than it used.
    pub demand: u64,
}

/// Each claim's share of `total` bytes per second, in the claims' order; the shares
/// add up to at most `total`.
pub fn shares(total: u64, claims: &[Claim]) -> Vec<u64> {
    let mut out = vec![0u64; claims.len()];
    let limits: Vec<u64> = claims.iter().map(|c| c.cap.min(c.demand)).collect();
    let left = fill(total, claims, &limits, &mut out);
    // Spread what nobody claimed as headroom, up to each cap.
    let room: Vec<u64> = claims
        .iter()
        .zip(&out)
        .map(|(c, got)| c.cap - got)
        .collect();
    let mut extra = vec![0u64; claims.len()];
    fill(left, claims, &room, &mut extra);
    for (o, e) in out.iter_mut().zip(extra) {
        *o += e;
    }
    out
}

/// Water-fills `total` over `limits` by weight into `out`; returns what is left.
fn fill(total: u64, claims: &[Claim], limits: &[u64], out: &mut [u64]) -> u64 {
    let mut order: Vec<usize> = (0..claims.len()).collect();
    // Ascending limit per unit of weight: a / wa < b / wb  ⇔  a·wb < b·wa.
    order.sort_by(|&a, &b| {
        let l = u128::from(limits[a]) * u128::from(weight(&claims[b]));
        let r = u128::from(limits[b]) * u128::from(weight(&claims[a]));
        l.cmp(&r)
    });
    let mut left = u128::from(total);
    let mut weights: u128 = claims.iter().map(|c| u128::from(weight(c))).sum();
    for i in order {
        let w = u128::from(weight(&claims[i]));
        let fair = left * w / weights;
        let give = fair.min(u128::from(limits[i]));
        out[i] = u64::try_from(give).expect("at most a u64 limit");
        left -= give;
        weights -= w;
    }
    u64::try_from(left).expect("at most the u64 total")
}

fn weight(c: &Claim) -> u32 {
    c.weight.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BIG: u64 = u64::MAX / 4;

    fn busy(weight: u32) -> Claim {
        Claim {
            weight,
            cap: BIG,
            demand: BIG,
        }
    }

    #[test]
    fn busy_connections_split_equally() {
        assert_eq!(shares(1000, &[busy(1); 4]), [250; 4]);
    }

    #[test]
    fn weights_split_in_proportion() {
        assert_eq!(shares(600, &[busy(1), busy(2), busy(3)]), [100, 200, 300]);
    }

    #[test]
    fn an_idle_connections_share_goes_to_the_busy_ones_as_headroom_only() {
        let idle = Claim {
            weight: 1,
            cap: BIG,
            demand: 10,
        };
        let s = shares(1000, &[idle, busy(1), busy(1)]);
        // The busy two take all but what the idle one uses; nothing is left over
        // for headroom.
        assert_eq!(s, [10, 495, 495]);
    }

    #[test]
    fn caps_hold_and_the_rest_goes_around() {
        let capped = Claim {
            weight: 1,
            cap: 100,
            demand: 100,
        };
        assert_eq!(shares(1000, &[capped, busy(1)]), [100, 900]);
    }

    #[test]
    fn what_nobody_claims_is_spread_as_headroom() {
        let quiet = Claim {
            weight: 1,
            cap: 1000,
            demand: 10,
        };
        assert_eq!(shares(1000, &[quiet, quiet]), [500, 500]);
    }

    #[test]
    fn no_claims_no_shares() {
        assert!(shares(1000, &[]).is_empty());
    }

    fn claim() -> impl Strategy<Value = Claim> {
        (1u32..1000, 0u64..1_000_000_000, 0u64..1_000_000_000).prop_map(|(weight, cap, demand)| {
            Claim {
                weight,
                cap,
                demand,
            }
        })
    }

    proptest! {
        /// Shares add up to at most the total and never exceed a cap.
        #[test]
        fn shares_fit_the_total_and_the_caps(
            total in 0u64..10_000_000_000,
            claims in prop::collection::vec(claim(), 0..50),
        ) {
            let s = shares(total, &claims);
            prop_assert!(s.iter().map(|&x| u128::from(x)).sum::<u128>() <= u128::from(total));
            for (c, x) in claims.iter().zip(&s) {
                prop_assert!(*x <= c.cap);
            }
        }

        /// Max-min fairness: a connection that got less than it claimed got at least
        /// as much per unit of weight as any other (within rounding).
        #[test]
        fn nobody_short_of_its_claim_gets_less_per_weight(
            total in 0u64..10_000_000_000,
            claims in prop::collection::vec(claim(), 1..50),
        ) {
            let s = shares(total, &claims);
            for (i, a) in claims.iter().enumerate() {
                if s[i] >= a.cap.min(a.demand) {
                    continue;
                }
                for (j, b) in claims.iter().enumerate() {
                    // s[i]/wa + 1 ≥ s[j]/wb, cross-multiplied; +1 per unit for rounding.
                    let l = (u128::from(s[i]) + u128::from(a.weight)) * u128::from(b.weight);
                    let r = u128::from(s[j]) * u128::from(a.weight);
                    prop_assert!(l + 2 * u128::from(b.weight) >= r,
                        "{i} got {} short of its claim, {j} got {}", s[i], s[j]);
                }
            }
        }

        /// When everyone is busy with no caps, everyone's share is within one byte
        /// per second of equal per unit of weight.
        #[test]
        fn busy_shares_are_weighted_equal(
            total in 1_000u64..10_000_000_000,
            weights in prop::collection::vec(1u32..1000, 1..50),
        ) {
            let claims: Vec<Claim> = weights.iter().map(|&w| busy(w)).collect();
            let s = shares(total, &claims);
            let sum_w: u128 = weights.iter().map(|&w| u128::from(w)).sum();
            for (w, x) in weights.iter().zip(&s) {
                let exact = u128::from(total) * u128::from(*w) / sum_w;
                // Rounding crumbs, at most one per claim, go around as headroom.
                let slack = weights.len() as u128 + 2;
                prop_assert!(u128::from(*x) + slack >= exact && u128::from(*x) <= exact + slack,
                    "weight {w}: got {x}, exact {exact}");
            }
        }
    }
}
