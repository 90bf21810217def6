//! What the `cairn` command does to a running cluster: read every node's status, offer a new
//! layout to every node, start or follow the garbage collector, and manage keys and buckets. The layout edits
//! themselves are `cairn_core::layout_edit`, and the views of the answers
//! `cairn_core::status`; this module makes the calls.
//!
//! A new layout is offered to every node; nodes that miss it learn it from their peers'
//! heartbeats.

use std::net::SocketAddr;

use cairn_client::pool::Pool;
use cairn_client::tls::{self, Identity};
use cairn_core::keys::{KeysAnswer, KeysRequest};
use cairn_core::layout::{Layout, NodeSpec};
use cairn_core::layout_edit::LayoutEditError;
use cairn_core::node_proto::{PeerMsg, PeerReply};
use cairn_core::status::{GcStatus, NodeStatus};
use cairn_core::wire;

use crate::net::peer::{self, PeerCallError};

/// What one node said to an administrative call, in a line.
#[derive(Debug)]
pub struct NodeAnswer {
    pub node: String,
    pub answer: String,
}

impl std::fmt::Display for NodeAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.node, self.answer)
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("{0}")]
    Layout(#[from] cairn_core::LayoutError),
    #[error("{0}")]
    Edit(#[from] LayoutEditError),
    #[error("no node of the layout answered: {}", list(.0))]
    Unreachable(Vec<NodeAnswer>),
    #[error("{}", list(.0))]
    Refused(Vec<NodeAnswer>),
    #[error("TLS: {0}")]
    Tls(#[from] cairn_client::tls::TlsError),
    #[error("cannot bind a local endpoint: {0}")]
    Bind(std::io::Error),
}

fn list(answers: &[NodeAnswer]) -> String {
    let all: Vec<String> = answers.iter().map(|a| a.to_string()).collect();
    all.join("; ")
}

/// A connection pool to a cluster, for administration.
pub struct Admin {
    pool: Pool,
    /// The layout used to find nodes (the configured one, or newer once fetched).
    pub layout: Layout,
    /// The layout before it, while the nodes still route by it (its moves are not over).
    pub previous: Option<Layout>,
}

impl Admin {
    pub fn new(layout: Layout, identity: &Identity) -> Result<Admin, AdminError> {
        let endpoint = tls::bind_endpoint(SocketAddr::from(([0, 0, 0, 0], 0)), None)
            .map_err(AdminError::Bind)?;
        let config = tls::client_config(identity, wire::ALPN)?;
        Ok(Admin {
            pool: Pool::new(endpoint, config),
            layout,
            previous: None,
        })
    }

    async fn call(&self, node: &NodeSpec, msg: &PeerMsg) -> Result<PeerReply, PeerCallError> {
        peer::call_bounded(&self.pool, node, self.layout.version, msg).await
    }

    /// The nodes of the layout `id` names (all of them for `None`); an error naming the id if
    /// there is no such node.
    pub fn targets(&self, id: Option<&str>) -> Result<Vec<NodeSpec>, AdminError> {
        let nodes: Vec<NodeSpec> = self
            .known_nodes()
            .into_iter()
            .filter(|n| id.is_none_or(|id| id == n.id))
            .collect();
        match (id, nodes.is_empty()) {
            (Some(id), true) => Err(LayoutEditError::Unknown { id: id.to_string() }.into()),
            _ => Ok(nodes),
        }
    }

    /// Asks one node something, with the answer it gave or why there was none.
    pub async fn ask(&self, node: &NodeSpec, msg: &PeerMsg) -> Result<PeerReply, PeerCallError> {
        self.call(node, msg).await
    }

    /// One node's status (it need not be in the layout any more).
    pub async fn status_of(&self, node: &NodeSpec) -> Result<NodeStatus, PeerCallError> {
        match self.call(node, &PeerMsg::Status).await? {
            PeerReply::Status(s) => Ok(*s),
            PeerReply::Refused { message } => Err(PeerCallError::Declined {
                node: node.id.clone(),
                message,
            }),
            other => Err(PeerCallError::UnexpectedReply {
                node: node.id.clone(),
                reply: Box::new(other),
            }),
        }
    }

    /// The newest layout any node holds (adopted here too, with the previous layout a node
    /// running the newest one still routes by).
    pub async fn current_layout(&mut self) -> Result<Layout, AdminError> {
        let mut best: Option<Layout> = None;
        let mut previous: Option<Layout> = None;
        let mut errors = Vec::new();
        for node in self.known_nodes() {
            match self.call(&node, &PeerMsg::FetchLayouts).await {
                Ok(PeerReply::Layouts {
                    layout,
                    previous: theirs,
                }) => {
                    if best.as_ref().is_none_or(|b| layout.version > b.version) {
                        previous = None;
                        best = Some(layout.clone());
                    }
                    if best.as_ref().is_some_and(|b| b.version == layout.version) {
                        previous = previous.or(theirs);
                    }
                }
                Ok(other) => errors.push(NodeAnswer {
                    node: node.id.clone(),
                    answer: format!("unexpected answer {other:?}"),
                }),
                Err(e) => errors.push(NodeAnswer {
                    node: node.id.clone(),
                    answer: e.to_string(),
                }),
            }
        }
        let layout = best.ok_or(AdminError::Unreachable(errors))?;
        if layout.version >= self.layout.version {
            self.layout = layout.clone();
            self.previous = previous;
        }
        Ok(layout)
    }

    /// The nodes of the layout, then those only the previous layout has.
    fn known_nodes(&self) -> Vec<NodeSpec> {
        let mut nodes = self.layout.nodes.clone();
        for n in self.previous.iter().flat_map(|p| &p.nodes) {
            if !nodes.iter().any(|m| m.id == n.id) {
                nodes.push(n.clone());
            }
        }
        nodes
    }

    /// Every node's status, in layout order (an error for nodes that did not answer).
    pub async fn statuses(&self) -> Vec<(NodeSpec, Result<NodeStatus, PeerCallError>)> {
        statuses(&self.pool, &self.layout, None).await
    }

    /// The statuses of the layout's nodes, then of the nodes that left it while the previous
    /// layout is still in use (they hand off what they hold).
    pub async fn statuses_with_leaving(
        &self,
    ) -> Vec<(NodeSpec, Result<NodeStatus, PeerCallError>)> {
        let mut all = self.layout.clone();
        all.nodes = self.known_nodes();
        statuses(&self.pool, &all, None).await
    }

    /// Offers `layout` to every node of it and of the current layout, all at once: each builds
    /// its placement table on its own, so the cluster adopts in about one node's time rather
    /// than one after another. Succeeds once one node adopted it (the others learn it by
    /// gossip); returns what each node said, in target order.
    pub async fn apply(&mut self, layout: &Layout) -> Result<Vec<NodeAnswer>, AdminError> {
        layout.validate()?;
        let mut targets = layout.nodes.clone();
        for n in &self.layout.nodes {
            if !targets.iter().any(|t| t.id == n.id) {
                targets.push(n.clone());
            }
        }
        let msg = PeerMsg::ApplyLayout {
            layout: layout.clone(),
        };
        let offers = targets.iter().map(|node| async {
            let (adopted, answer) = match self.call(node, &msg).await {
                Ok(PeerReply::LayoutApplied { version }) => {
                    (true, format!("adopted version {version}"))
                }
                Ok(PeerReply::Refused { message }) => (false, format!("refused: {message}")),
                Ok(other) => (false, format!("unexpected answer {other:?}")),
                Err(e) => (false, format!("unreachable: {e}")),
            };
            let answer = NodeAnswer {
                node: node.id.clone(),
                answer,
            };
            (adopted, answer)
        });
        let answers = join_all(offers.collect()).await;
        let adopted = answers.iter().filter(|(adopted, _)| *adopted).count();
        let said: Vec<NodeAnswer> = answers.into_iter().map(|(_, answer)| answer).collect();
        if adopted == 0 {
            return Err(AdminError::Refused(said));
        }
        self.layout = layout.clone();
        Ok(said)
    }

    /// Starts a garbage collection on the first node that answers (or asks how it goes, with
    /// `start` false); returns that node, whether this call started it, and its progress.
    pub async fn gc(
        &self,
        node: Option<&str>,
        start: bool,
    ) -> Result<(String, bool, GcStatus), AdminError> {
        let msg = if start {
            PeerMsg::GcStart
        } else {
            PeerMsg::GcStatus
        };
        let mut errors = Vec::new();
        for n in self
            .layout
            .nodes
            .iter()
            .filter(|n| node.is_none_or(|id| id == n.id))
        {
            match self.call(n, &msg).await {
                Ok(PeerReply::Gc { started, status }) => {
                    return Ok((n.id.clone(), started, status));
                }
                Ok(PeerReply::Refused { message }) => errors.push(NodeAnswer {
                    node: n.id.clone(),
                    answer: message,
                }),
                Ok(other) => errors.push(NodeAnswer {
                    node: n.id.clone(),
                    answer: format!("unexpected answer {other:?}"),
                }),
                Err(e) => errors.push(NodeAnswer {
                    node: n.id.clone(),
                    answer: e.to_string(),
                }),
            }
        }
        Err(AdminError::Unreachable(errors))
    }

    /// The protocol version this command's connection to `node` speaks (connecting if need
    /// be); `None` if it cannot connect.
    pub async fn protocol_of(&self, node: &NodeSpec) -> Option<u32> {
        let conn = self.pool.connection(node).await.ok()?;
        tls::negotiated_protocol(&conn)
    }

    /// Asks the first node of the layout that can (one with the S3 front) to carry out a key
    /// or bucket request; returns that node and its answer.
    pub async fn keys(&self, request: KeysRequest) -> Result<(String, KeysAnswer), AdminError> {
        let msg = PeerMsg::Keys(request);
        let mut errors = Vec::new();
        for n in &self.layout.nodes {
            if let Some(old) = self
                .protocol_of(n)
                .await
                .filter(|p| *p < msg.since_protocol())
            {
                errors.push(NodeAnswer {
                    node: n.id.clone(),
                    answer: format!(
                        "speaks protocol cairn/{old}, which has no key administration: \
                         upgrade it first"
                    ),
                });
                continue;
            }
            let answer = match self.call(n, &msg).await {
                Ok(PeerReply::Keys(KeysAnswer::Refused(message))) => {
                    return Err(AdminError::Refused(vec![NodeAnswer {
                        node: n.id.clone(),
                        answer: message,
                    }]));
                }
                Ok(PeerReply::Keys(answer)) => return Ok((n.id.clone(), answer)),
                Ok(PeerReply::Refused { message }) => message,
                Ok(other) => format!("unexpected answer {other:?}"),
                Err(e) => e.to_string(),
            };
            errors.push(NodeAnswer {
                node: n.id.clone(),
                answer,
            });
        }
        Err(AdminError::Unreachable(errors))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Every node's status, asked of all nodes at once, in layout order; `local` answers for one
/// node without a call (a node reporting on its cluster knows its own status).
pub(crate) async fn statuses(
    pool: &Pool,
    layout: &Layout,
    local: Option<(&str, NodeStatus)>,
) -> Vec<(NodeSpec, Result<NodeStatus, PeerCallError>)> {
    let asks = layout.nodes.iter().map(|node| async {
        if let Some((id, status)) = &local
            && *id == node.id
        {
            return (node.clone(), Ok(status.clone()));
        }
        let status = match peer::call_bounded(pool, node, layout.version, &PeerMsg::Status).await {
            Ok(PeerReply::Status(s)) => Ok(*s),
            Ok(PeerReply::Refused { message }) => Err(PeerCallError::Declined {
                node: node.id.clone(),
                message,
            }),
            Ok(other) => Err(PeerCallError::UnexpectedReply {
                node: node.id.clone(),
                reply: Box::new(other),
            }),
            Err(e) => Err(e),
        };
        (node.clone(), status)
    });
    join_all(asks.collect()).await
}

/// Runs futures together on the calling task; their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *output = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}
