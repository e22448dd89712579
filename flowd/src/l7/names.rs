//! The names an event gives its flow records (see
//! [`crate::flowtable::FlowL7`]): the HTTP request's Host and target, the
//! DNS query name, the TLS SNI.

use super::{L7Event, event::Detail};
use crate::flowtable::FlowL7;

impl L7Event {
    /// The names this event gives the records of its connection.
    pub fn flow_names(&self) -> FlowL7 {
        let mut n = FlowL7::default();
        match &self.detail {
            Detail::Http(h) => {
                n.http_host = h.host.as_deref().map(Into::into);
                n.http_url = Some(h.url.as_str().into());
            }
            Detail::Dns(d) => n.dns_qname = d.qname.as_deref().map(Into::into),
            Detail::Tls(t) => n.tls_sni = t.sni.as_deref().map(Into::into),
        }
        n
    }
}
