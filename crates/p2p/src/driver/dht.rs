//! The DHT's side of the driver: records this node stores for others, and what Kademlia
//! reports about its queries.

use super::*;

impl Driver {
    /// The publisher of the record this node stores under `key`, if any.
    pub(super) fn record_owner(&mut self, key: &[u8]) -> Option<PeerId> {
        use kad::store::RecordStore as _;
        let stored = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .get(&kad::RecordKey::new(&key))?;
        crate::record::open(key, &stored.value)
            .ok()
            .map(|r| r.publisher)
    }

    /// A record another node asks this one to store: kept only when its publisher signed
    /// it and the key is not already bound to another publisher here.
    pub(super) fn inbound_record(&mut self, source: PeerId, record: kad::Record) {
        use kad::store::RecordStore as _;
        let problem = match crate::record::open(record.key.as_ref(), &record.value) {
            Err(e) => Some(e.to_string()),
            Ok(r) => match self.record_owner(record.key.as_ref()) {
                Some(owner) if owner != r.publisher => Some(format!(
                    "the key is bound to another publisher ({owner}) here"
                )),
                _ => None,
            },
        };
        if let Some(problem) = problem {
            self.counters.dht_records_refused();
            self.penalize(source, &format!("a DHT record refused: {problem}"));
            return;
        }
        if let Err(e) = self.swarm.behaviour_mut().kad.store_mut().put(record) {
            tracing::debug!("storing a DHT record: {e}");
        }
    }

    pub(super) fn kad_event(&mut self, event: kad::Event) {
        if let kad::Event::InboundRequest {
            request:
                kad::InboundRequest::PutRecord {
                    source,
                    record: Some(record),
                    ..
                },
        } = event
        {
            return self.inbound_record(source, record);
        }
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        match result {
            kad::QueryResult::PutRecord(r) => {
                if let Some(KadPending::Put(tx)) = self.kad.remove(&id) {
                    let _ = tx.send(r.map(|_| ()).map_err(|e| NetworkError::Dht {
                        operation: "put",
                        source: match e {
                            kad::PutRecordError::QuorumFailed { .. } => Reason::cause(
                                "stored on this node only: no other node took the record \
                                     (is this node connected?)",
                            ),
                            other => Box::new(other),
                        },
                    }));
                }
            }
            kad::QueryResult::GetRecord(r) => {
                let Some(KadPending::Get(tx)) = self.kad.remove(&id) else {
                    return;
                };
                let answer = match r {
                    Ok(kad::GetRecordOk::FoundRecord(found)) => {
                        match crate::record::open(found.record.key.as_ref(), &found.record.value) {
                            Ok(record) => {
                                if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                                    q.finish();
                                }
                                Ok(Some(record))
                            }
                            Err(e) => {
                                // A forged record: ignored, and the query goes on.
                                self.counters.dht_records_refused();
                                if let Some(peer) = found.peer {
                                    self.penalize(peer, &format!("a DHT record refused: {e}"));
                                }
                                if !step.last {
                                    self.kad.insert(id, KadPending::Get(tx));
                                    return;
                                }
                                Ok(None)
                            }
                        }
                    }
                    Ok(_) | Err(kad::GetRecordError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(NetworkError::Dht {
                        operation: "get",
                        source: Box::new(e),
                    }),
                };
                let _ = tx.send(answer);
            }
            kad::QueryResult::GetClosestPeers(r) => {
                let Some(KadPending::Find(peer, tx)) = self.kad.remove(&id) else {
                    return;
                };
                let peers = match r {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                let found = peers
                    .into_iter()
                    .find(|p| p.peer_id == peer)
                    .map(|p| p.addrs)
                    .or_else(|| {
                        self.peers
                            .get(&peer)
                            .filter(|s| !s.connections.is_empty())
                            .map(|s| s.connections.values().cloned().collect())
                    });
                let _ = tx.send(found.ok_or_else(|| NetworkError::Dht {
                    operation: "find_peer",
                    source: Reason::cause(format!("no peer knows {peer}")),
                }));
            }
            kad::QueryResult::Bootstrap(Err(e)) => {
                tracing::debug!("DHT bootstrap: {e}");
            }
            _ => {}
        }
    }
}
