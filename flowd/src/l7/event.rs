//! The event one request, query or handshake gives, and its JSON line
//! (issue 12, "Outputs / Event log"): addresses and timestamps as in the
//! flow records (`crate::record`), keys with no value omitted.

use flowd_common::FlowKey;
use serde_json::{Map, Value};

use crate::{clock::rfc3339_ns, record};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L7Kind {
    Http,
    Dns,
    Tls,
}

impl L7Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Dns => "dns",
            Self::Tls => "tls",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpInfo {
    pub method: String,
    /// The request target, verbatim.
    pub url: String,
    /// The Host header, verbatim (port included if present).
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub status: Option<u16>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsInfo {
    pub id: u16,
    /// The first question's name, no trailing dot.
    pub qname: Option<String>,
    pub qtype: Option<u16>,
    pub rcode: Option<u8>,
    pub answers: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    pub sni: Option<String>,
    /// As offered, in order.
    pub alpn: Vec<String>,
    /// The supported_versions extension, as offered (GREASE left out).
    pub versions_offered: Vec<u16>,
    /// Negotiated (ServerHello's supported_versions, else its version).
    pub version: Option<u16>,
    pub cipher: Option<u16>,
    pub ja4: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    Http(HttpInfo),
    Dns(DnsInfo),
    Tls(TlsInfo),
}

/// One HTTP request, DNS query or TLS handshake, with its response if one
/// came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L7Event {
    /// The request's timestamp (wall-clock ns).
    pub ts_ns: u64,
    /// The key of the packet that carried the request: client to server.
    pub key: FlowKey,
    pub direction: u8,
    /// Response time minus request time, when a response came.
    pub latency_ns: Option<u64>,
    pub detail: Detail,
}

impl L7Event {
    pub fn kind(&self) -> L7Kind {
        match self.detail {
            Detail::Http(_) => L7Kind::Http,
            Detail::Dns(_) => L7Kind::Dns,
            Detail::Tls(_) => L7Kind::Tls,
        }
    }

    /// The event log's JSON object; `device` names `key.ifindex`.
    pub fn to_json(&self, device: &str) -> Value {
        let k = &self.key;
        let mut m = Map::new();
        m.insert("ts".into(), rfc3339_ns(self.ts_ns).into());
        m.insert("device".into(), device.into());
        m.insert(
            "direction".into(),
            flowd_common::proto::direction_name(self.direction).into(),
        );
        m.insert("src".into(), record::addr(&k.src).to_string().into());
        m.insert("dst".into(), record::addr(&k.dst).to_string().into());
        m.insert("sport".into(), k.sport.into());
        m.insert("dport".into(), k.dport.into());
        m.insert("proto".into(), k.proto.into());
        m.insert("kind".into(), self.kind().as_str().into());
        let latency_ms = self.latency_ns.map(|ns| Value::from(ns as f64 / 1e6));
        let mut put = |key: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(key.into(), v);
            }
        };
        match &self.detail {
            Detail::Http(h) => {
                put("http_method", Some(h.method.clone().into()));
                put("http_host", h.host.clone().map(Value::from));
                put("http_url", Some(h.url.clone().into()));
                put("http_user_agent", h.user_agent.clone().map(Value::from));
                put("http_status", h.status.map(Value::from));
                put("http_latency_ms", latency_ms);
            }
            Detail::Dns(d) => {
                put("dns_qname", d.qname.clone().map(Value::from));
                put("dns_qtype", d.qtype.map(Value::from));
                put("dns_id", Some(d.id.into()));
                put("dns_rcode", d.rcode.map(Value::from));
                put(
                    "dns_answers",
                    (!d.answers.is_empty()).then(|| d.answers.clone().into()),
                );
                put("dns_latency_ms", latency_ms);
            }
            Detail::Tls(t) => {
                put("tls_sni", t.sni.clone().map(Value::from));
                put(
                    "tls_alpn",
                    (!t.alpn.is_empty()).then(|| t.alpn.clone().into()),
                );
                put(
                    "tls_versions_offered",
                    (!t.versions_offered.is_empty()).then(|| t.versions_offered.clone().into()),
                );
                put("tls_version", t.version.map(Value::from));
                put("tls_cipher", t.cipher.map(Value::from));
                put("tls_ja4", t.ja4.clone().map(Value::from));
            }
        }
        Value::Object(m)
    }

    /// The JSON line, newline included.
    pub fn to_line(&self, device: &str) -> String {
        let mut s = self.to_json(device).to_string();
        s.push('\n');
        s
    }
}
