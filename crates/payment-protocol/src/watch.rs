//! The payee's watchtower: the ledger looked at for the channels this node is paid
//! through, so that a payer's close on less than it owes is answered without anyone acting.

use super::*;

/// How long before a channel's expiry, beyond its challenge period, the payee starts
/// closing it, seconds: the payer may take the whole deposit back once the channel has been
/// expired for one challenge period, so the payee's close must be on the ledger before.
const EXPIRY_MARGIN: u64 = 3600;

/// What one look at the ledger did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    /// Channels the ledger was asked about.
    pub asked: usize,
    /// Closes the payer started on less than this node holds, disputed with its best
    /// state.
    pub disputed: usize,
    /// Closes paid out once their window ended.
    pub finalized: usize,
    /// Channels near their expiry this node started closing.
    pub closed: usize,
    /// Channels the ledger could not be asked about, or a step it refused (tried again on
    /// the next look).
    pub failed: usize,
}

/// What the watchtower does about one channel, from where the ledger says it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Nothing to do now.
    Wait,
    /// Nothing to do ever again: it is paid out (or the ledger never held it).
    Done,
    /// Dispute the payer's close with this node's best state.
    Dispute,
    /// Pay the close out: its window ended.
    Finalize,
    /// Start a close on this node's best state: the channel expires soon.
    Close,
}

/// The step for a channel this node holds `best` on (cumulative), expiring at `expiry`,
/// with challenge period `period`, that the ledger holds as `answer`, at time `now`; `me`
/// is this node's payment key, hex.
fn step(answer: &ChannelAnswer, best: u64, expiry: u64, period: u64, now: u64, me: &str) -> Step {
    match (answer.status.as_str(), &answer.closing) {
        ("open", _) => {
            if now.saturating_add(period).saturating_add(EXPIRY_MARGIN) >= expiry {
                Step::Close
            } else {
                Step::Wait
            }
        }
        ("closing", Some(closing)) => {
            let mine = closing.closer == me;
            if now < closing.challenge_ends {
                if !mine && closing.cumulative < best {
                    Step::Dispute
                } else {
                    Step::Wait
                }
            } else if !mine || closing.challenge_ends.saturating_add(EXPIRY_MARGIN) >= expiry {
                // The payer's close, or the one this node started because the channel was
                // expiring: paid out. A close this node's operator started is theirs to
                // finish.
                Step::Finalize
            } else {
                Step::Wait
            }
        }
        _ => Step::Done,
    }
}

impl Payments {
    /// Looks once at the ledger (or the chain) for every channel this node is paid through
    /// and holds a payment on (on a chain, after the first look, for those the contract
    /// logged something about since, and all of them every 60 looks): disputes a payer's close on less than this node holds, pays out such a
    /// close once its window has ended, and starts closing a channel before it expires
    /// (then pays it out). Everything it needs is in the stores and on the ledger, so a
    /// restarted node carries on where it was.
    pub async fn watch(&self) -> Watched {
        let mut watched = Watched::default();
        let Some(backend) = self.backend() else {
            return watched;
        };
        let ledger = backend.ledger();
        let now = match self.settlement_now(backend).await {
            Ok(now) => now,
            Err(why) => {
                tracing::warn!("the watchtower could not read the chain's clock: {why}");
                watched.failed += 1;
                return watched;
            }
        };
        // On a chain: the contract's events say which channels to read.
        let focus = match backend {
            Backend::Chain(on) => match on.focus().await {
                Ok(focus) => Some(focus),
                Err(why) => {
                    tracing::warn!("the watchtower could not follow the contract's events: {why}");
                    watched.failed += 1;
                    return watched;
                }
            },
            Backend::Ledger { .. } => None,
        };
        let read = |id: &ChannelId| {
            focus
                .as_ref()
                .and_then(|f| f.channels.as_ref())
                .is_none_or(|ids| ids.contains(id))
        };
        if let Backend::Chain(_) = backend {
            self.watch_own_closes(backend, now, &mut watched).await;
        }
        let me = hex::encode(self.inner.key.public().0);
        let channels = match self.inner.payee.channels() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("the watchtower could not read this node's channels: {e}");
                watched.failed += 1;
                return watched;
            }
        };
        for c in channels {
            let id = c.params.id();
            if c.params.ledger != ledger
                || c.state.nonce == 0
                || self.watched_out(&id)
                || !read(&id)
            {
                continue;
            }
            let Some(answer) = self.look_at(backend, &c.params, &mut watched).await else {
                continue;
            };
            let best = c.state.cumulative.base_units();
            let period = answer.challenge_period_s.unwrap_or(0);
            let todo = step(&answer, best, c.params.expiry, period, now, &me);
            let channel = hex::encode(id.0);
            let (settle, counter) = match todo {
                Step::Wait => continue,
                Step::Done => {
                    self.watch_no_more(id);
                    continue;
                }
                Step::Dispute => (Settle::Dispute, &mut watched.disputed),
                Step::Finalize => (Settle::Finalize, &mut watched.finalized),
                Step::Close => (Settle::Start, &mut watched.closed),
            };
            match self.settle(&channel, settle).await {
                Ok(_) => {
                    *counter += 1;
                    let closing = answer.closing.as_ref().map_or(0, |c| c.cumulative);
                    match todo {
                        Step::Dispute => tracing::warn!(
                            channel.id = %id,
                            "the payer closed the channel on {closing}; this node holds {best}: disputed"
                        ),
                        Step::Finalize => {
                            self.watch_no_more(id);
                            tracing::info!(channel.id = %id, "the channel's close was paid out");
                        }
                        _ => tracing::info!(
                            channel.id = %id,
                            "the channel expires soon: this node started closing it on {best}"
                        ),
                    }
                }
                Err(why) => {
                    tracing::warn!(channel.id = %id, "the watchtower's {todo:?} was refused: {why}");
                    watched.failed += 1;
                }
            }
        }
        // A look that could not do all it found reads the same events again next time.
        if let (Backend::Chain(on), Some(focus), 0) = (backend, &focus, watched.failed) {
            on.followed(focus.to);
        }
        watched
    }

    /// On a chain: pays out this node's own closes as a payer once their challenge period
    /// is over (the deposit's rest comes back to it; on the embedded ledger that is left
    /// to the operator, `channel finalize`).
    async fn watch_own_closes(&self, backend: Backend<'_>, now: u64, watched: &mut Watched) {
        let channels = match self.inner.payer.channels() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("the watchtower could not read this node's channels: {e}");
                watched.failed += 1;
                return;
            }
        };
        for c in channels {
            let id = c.params.id();
            if !c.closing || c.opening.is_some() || self.watched_out(&id) {
                continue;
            }
            let Some(answer) = self.look_at(backend, &c.params, watched).await else {
                continue;
            };
            match (answer.status.as_str(), &answer.closing) {
                ("closing", Some(closing)) if now > closing.challenge_ends => {
                    match self.settle(&hex::encode(id.0), Settle::Finalize).await {
                        Ok(_) => {
                            watched.finalized += 1;
                            self.watch_no_more(id);
                            tracing::info!(channel.id = %id, "this node's close was paid out");
                        }
                        Err(why) => {
                            tracing::warn!(channel.id = %id, "paying out this node's close was refused: {why}");
                            watched.failed += 1;
                        }
                    }
                }
                ("settled" | "unknown", _) => self.watch_no_more(id),
                _ => {}
            }
        }
    }

    /// Where the channel of `params` stands, for the watchtower: counted as asked, or as
    /// failed (and logged) when it could not be asked.
    async fn look_at(
        &self,
        backend: Backend<'_>,
        params: &ChannelParams,
        watched: &mut Watched,
    ) -> Option<ChannelAnswer> {
        match self.where_settled(backend, params).await {
            Ok(answer) => {
                watched.asked += 1;
                Some(answer)
            }
            Err(why) => {
                tracing::warn!(channel.id = %params.id(), "the watchtower could not ask {}: {why}", backend.name());
                watched.failed += 1;
                None
            }
        }
    }

    /// The channel is paid out: not asked about again.
    fn watch_no_more(&self, id: ChannelId) {
        self.inner
            .watched_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
    }

    fn watched_out(&self, id: &ChannelId) -> bool {
        self.inner
            .watched_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "aa";
    const PAYER: &str = "bb";
    const EXPIRY: u64 = 1_000_000;
    const PERIOD: u64 = 100;

    fn closing(by: &str, cumulative: u64, ends: u64) -> ChannelAnswer {
        ChannelAnswer {
            status: "closing".into(),
            params: None,
            challenge_period_s: Some(PERIOD),
            closing: Some(ClosingJson {
                cumulative,
                nonce: 1,
                challenge_ends: ends,
                closer: by.into(),
            }),
        }
    }

    fn open() -> ChannelAnswer {
        ChannelAnswer {
            status: "open".into(),
            params: None,
            challenge_period_s: Some(PERIOD),
            closing: None,
        }
    }

    #[test]
    fn a_payers_close_on_less_is_disputed_inside_the_window_and_paid_out_after() {
        let answer = closing(PAYER, 5, 500);
        assert_eq!(step(&answer, 9, EXPIRY, PERIOD, 499, ME), Step::Dispute);
        assert_eq!(step(&answer, 5, EXPIRY, PERIOD, 499, ME), Step::Wait);
        assert_eq!(step(&answer, 9, EXPIRY, PERIOD, 500, ME), Step::Finalize);
    }

    #[test]
    fn a_close_of_this_nodes_operator_is_left_to_them_unless_the_channel_was_expiring() {
        assert_eq!(
            step(&closing(ME, 9, 500), 9, EXPIRY, PERIOD, 600, ME),
            Step::Wait
        );
        let late = EXPIRY - EXPIRY_MARGIN;
        assert_eq!(
            step(&closing(ME, 9, late), 9, EXPIRY, PERIOD, late, ME),
            Step::Finalize
        );
    }

    #[test]
    fn an_open_channel_is_closed_one_period_and_a_margin_before_it_expires() {
        let from = EXPIRY - PERIOD - EXPIRY_MARGIN;
        assert_eq!(step(&open(), 9, EXPIRY, PERIOD, from - 1, ME), Step::Wait);
        assert_eq!(step(&open(), 9, EXPIRY, PERIOD, from, ME), Step::Close);
    }

    #[test]
    fn a_settled_or_unknown_channel_is_done() {
        for status in ["settled", "unknown"] {
            let answer = ChannelAnswer {
                status: status.into(),
                params: None,
                challenge_period_s: None,
                closing: None,
            };
            assert_eq!(step(&answer, 9, EXPIRY, PERIOD, 1, ME), Step::Done);
        }
    }
}
