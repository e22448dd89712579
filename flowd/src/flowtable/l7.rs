//! Application-layer names on flows (issue 12, "Flow records"): the first
//! HTTP request's Host and target, the first DNS query name and the first
//! TLS SNI of a flow's connection, for the records, `/api/v1/flows` and
//! IPFIX.
//!
//! Most flows carry none, so a flow holds them behind one pointer
//! (`Option<Box<FlowL7>>`, 8 bytes in [`Flow`]); the 64-byte struct and its
//! strings exist only for flows that have a name.
//!
//! The names come from L7 events, which name the client→server key of the
//! packet that carried the request. Both directions of that connection are
//! annotated when they are in the table: the server→client record is where
//! a download's bytes are, and a collector that sees one record should not
//! have to join it with the other to learn the name. Each name is set once
//! (the first request's), whatever later requests on the same connection
//! ask for; a record that ends for the active timeout hands its names to
//! the next record of the same flow.

use flowd_common::FlowKey;

use super::{Flow, FlowTable};

/// The names of a flow's connection; `None`: not seen (yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowL7 {
    /// The first HTTP request's Host header, verbatim.
    pub http_host: Option<Box<str>>,
    /// The first HTTP request's target, verbatim.
    pub http_url: Option<Box<str>>,
    /// The first DNS query's name, no trailing dot.
    pub dns_qname: Option<Box<str>>,
    /// The first TLS ClientHello's server name.
    pub tls_sni: Option<Box<str>>,
}

impl FlowL7 {
    pub fn is_empty(&self) -> bool {
        self.http_host.is_none()
            && self.http_url.is_none()
            && self.dns_qname.is_none()
            && self.tls_sni.is_none()
    }

    /// Takes from `new` what is not known yet. HTTP's host and target come
    /// from one request (the first one with a target), so they are set
    /// together. Returns whether anything was set.
    pub fn merge_first(&mut self, new: &FlowL7) -> bool {
        let mut changed = false;
        if self.http_url.is_none() && new.http_url.is_some() {
            self.http_url.clone_from(&new.http_url);
            self.http_host.clone_from(&new.http_host);
            changed = true;
        }
        for (have, got) in [
            (&mut self.dns_qname, &new.dns_qname),
            (&mut self.tls_sni, &new.tls_sni),
        ] {
            if have.is_none() && got.is_some() {
                have.clone_from(got);
                changed = true;
            }
        }
        changed
    }
}

/// Which flows an annotation reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Annotated {
    /// The flow of the event's own key (client→server).
    pub flow: bool,
    /// The other direction of the same connection.
    pub reverse: bool,
}

impl Flow {
    /// Takes the names of `new` this flow does not have yet.
    pub fn annotate(&mut self, new: &FlowL7) {
        match &mut self.l7 {
            Some(have) => {
                have.merge_first(new);
            }
            None if !new.is_empty() => {
                let mut l7 = FlowL7::default();
                l7.merge_first(new);
                self.l7 = Some(Box::new(l7));
            }
            None => {}
        }
    }
}

impl FlowTable {
    /// Gives the names of an event on client→server `key` to that flow and
    /// to its connection's other direction, those of them in the table.
    pub fn annotate(&mut self, key: &FlowKey, names: &FlowL7) -> Annotated {
        let fwd = self.slot(key);
        let rev = self.reverse_slot(key);
        for s in fwd.iter().chain(&rev) {
            self.flows[*s as usize].annotate(names);
        }
        Annotated {
            flow: fwd.is_some(),
            reverse: rev.is_some(),
        }
    }
}
