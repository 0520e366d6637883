fn main(){ let _ = (rtrb::RingBuffer::<u8>::new(2), hdrhistogram::Histogram::<u64>::new(3), core_affinity::get_core_ids(), serde_json::json!({})); }
