//! RTT measurement: on or off in the programs, and the ring buffer of
//! samples they write.

use flowd_common::{FLAG_RTT, RttSample};

use super::{Datapath, LoadError};

impl Datapath {
    /// Turns RTT measurement in the programs on or off.
    pub fn set_rtt(&mut self, on: bool) -> Result<(), LoadError> {
        self.flags = if on {
            self.flags | FLAG_RTT
        } else {
            self.flags & !FLAG_RTT
        };
        self.write_control()
    }

    /// Hands every RTT sample waiting in the ring buffer to `sink`.
    pub fn drain_rtt(&mut self, mut sink: impl FnMut(&RttSample)) -> usize {
        let Some(ring) = self.rtt_events.as_mut() else {
            return 0;
        };
        let mut n = 0;
        while let Some(item) = ring.next() {
            if item.len() >= size_of::<RttSample>() {
                // SAFETY: the program writes whole RttSample records (plain
                // data, any bit pattern valid); read unaligned to be safe.
                let s = unsafe { item.as_ptr().cast::<RttSample>().read_unaligned() };
                sink(&s);
                n += 1;
            }
        }
        n
    }
}
