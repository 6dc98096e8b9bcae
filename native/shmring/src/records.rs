//! The two binary record kinds of the hot path between gateway workers and the control process.
//!
//! Every other record on the rings is a pickled tuple (kefu.workers.wire), which starts with the
//! pickle opcode 0x80; these start with their own tag, so one byte tells them apart. Both layouts are
//! little-endian with fixed-size headers; `kefu.workers.wire` has the same layouts in Python (the
//! reference twin; tests/workers/test_wire.py compares the two).
//!
//! * `F` (worker → control, ingress ring): one complete client frame, as the worker's gateway
//!   received it, with the connection's name on that worker (`slot`, and a `serial` that changes each
//!   time the slot is reused) and the receive clocks. The control process runs it through its data
//!   plane; the worker never decodes it.
//! * `D` (control → one worker, its delivery ring): one encoded frame (JSON and/or `kefu.bin.v1`) and
//!   the `(slot, serial)` of every connection on that worker that gets it; a connection whose serial
//!   no longer matches (it left and the slot was reused) is skipped.

/// First byte of a frame record.
pub const FRAME_TAG: u8 = b'F';
/// First byte of a delivery record.
pub const DELIVERY_TAG: u8 = b'D';

/// tag u8, binary u8, worker u16, generation u32, slot u32, serial u32, now_wall f64, now_mono f64.
pub const FRAME_HEADER: usize = 32;
/// tag u8, 3 reserved bytes, targets u32, json_len u32, binary_len u32; then targets × (slot u32,
/// serial u32), the JSON bytes, the binary bytes.
pub const DELIVERY_HEADER: usize = 16;

/// A client frame as it crosses the ingress ring (borrowed from the record).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameRecord<'a> {
    pub binary: bool,
    pub worker: u16,
    pub generation: u32,
    pub slot: u32,
    pub serial: u32,
    pub now_wall: f64,
    pub now_mono: f64,
    pub payload: &'a [u8],
}

impl FrameRecord<'_> {
    /// Appends the record to `out` (cleared first).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(FRAME_HEADER + self.payload.len());
        out.push(FRAME_TAG);
        out.push(u8::from(self.binary));
        out.extend_from_slice(&self.worker.to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.slot.to_le_bytes());
        out.extend_from_slice(&self.serial.to_le_bytes());
        out.extend_from_slice(&self.now_wall.to_le_bytes());
        out.extend_from_slice(&self.now_mono.to_le_bytes());
        out.extend_from_slice(self.payload);
    }
}

fn u16_at(data: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([data[at], data[at + 1]])
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

fn f64_at(data: &[u8], at: usize) -> f64 {
    f64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads a frame record; None when `data` is not one (other tag, too short).
pub fn decode_frame(data: &[u8]) -> Option<FrameRecord<'_>> {
    if data.len() < FRAME_HEADER || data[0] != FRAME_TAG || data[1] > 1 {
        return None;
    }
    Some(FrameRecord {
        binary: data[1] == 1,
        worker: u16_at(data, 2),
        generation: u32_at(data, 4),
        slot: u32_at(data, 8),
        serial: u32_at(data, 12),
        now_wall: f64_at(data, 16),
        now_mono: f64_at(data, 24),
        payload: &data[FRAME_HEADER..],
    })
}

/// Appends a delivery record to `out` (cleared first). `targets` are `(slot, serial)` pairs; an empty
/// encoding means "no connection needs this format".
pub fn encode_delivery(out: &mut Vec<u8>, targets: &[(u32, u32)], json: &[u8], binary: &[u8]) {
    out.clear();
    out.reserve(DELIVERY_HEADER + targets.len() * 8 + json.len() + binary.len());
    out.extend_from_slice(&[DELIVERY_TAG, 0, 0, 0]);
    for n in [targets.len(), json.len(), binary.len()] {
        out.extend_from_slice(
            &u32::try_from(n)
                .expect("bounded by the ring's record size")
                .to_le_bytes(),
        );
    }
    for (slot, serial) in targets {
        out.extend_from_slice(&slot.to_le_bytes());
        out.extend_from_slice(&serial.to_le_bytes());
    }
    out.extend_from_slice(json);
    out.extend_from_slice(binary);
}

/// A delivery record read back: its `(slot, serial)` targets, JSON payload and binary payload.
pub type Delivery<'a> = (Vec<(u32, u32)>, &'a [u8], &'a [u8]);

/// Reads a delivery record; None when `data` is not a well-formed one.
pub fn decode_delivery(data: &[u8]) -> Option<Delivery<'_>> {
    if data.len() < DELIVERY_HEADER || data[0] != DELIVERY_TAG {
        return None;
    }
    let (targets, json_len, binary_len) = (
        u32_at(data, 4) as usize,
        u32_at(data, 8) as usize,
        u32_at(data, 12) as usize,
    );
    let targets_end = DELIVERY_HEADER.checked_add(targets.checked_mul(8)?)?;
    let json_end = targets_end.checked_add(json_len)?;
    if json_end.checked_add(binary_len)? != data.len() {
        return None;
    }
    let pairs = (0..targets)
        .map(|i| {
            (
                u32_at(data, DELIVERY_HEADER + i * 8),
                u32_at(data, DELIVERY_HEADER + i * 8 + 4),
            )
        })
        .collect();
    Some((pairs, &data[targets_end..json_end], &data[json_end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let record = FrameRecord {
            binary: true,
            worker: 3,
            generation: 7,
            slot: 42,
            serial: 9,
            now_wall: 1.5e9,
            now_mono: 12.25,
            payload: b"{\"t\":\"send\"}",
        };
        let mut out = Vec::new();
        record.encode_into(&mut out);
        assert_eq!(out.len(), FRAME_HEADER + record.payload.len());
        assert_eq!(decode_frame(&out), Some(record));
        assert_eq!(decode_frame(&out[..FRAME_HEADER - 1]), None);
        out[1] = 2;
        assert_eq!(decode_frame(&out), None);
    }

    #[test]
    fn delivery_round_trip_and_bounds() {
        let mut out = Vec::new();
        encode_delivery(&mut out, &[(1, 2), (3, 4)], b"json", b"");
        let (targets, json, binary) = decode_delivery(&out).expect("well formed");
        assert_eq!(targets, vec![(1, 2), (3, 4)]);
        assert_eq!((json, binary), (&b"json"[..], &b""[..]));
        assert!(decode_delivery(&out[..out.len() - 1]).is_none());
        out[4] = 0xff; // a target count far past the record's end
        assert!(decode_delivery(&out).is_none());
        assert!(decode_delivery(b"\x80\x05").is_none());
    }
}
