//! Streaming pcap / pcapng reader.
