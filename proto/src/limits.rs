//! The sizes both sides of an invocation must respect: Lambda's payload
//! limits, and the most a lambdex function takes in one request. Kept
//! here, in one place, because the coordinator packs requests to fit them,
//! the functions refuse what is over them, and the local Lambda enforces
//! Lambda's own.

/// The largest synchronous request Lambda accepts: 6 MB (6,291,456 bytes).
pub const SYNC_REQUEST_BYTES: usize = 6 * 1024 * 1024;
/// The largest synchronous response Lambda returns (its documented
/// 6,291,556 bytes).
pub const SYNC_RESPONSE_BYTES: usize = 6_291_556;
/// The largest asynchronous (`Event`) request: 1 MB since October 2025.
pub const EVENT_REQUEST_BYTES: usize = 1024 * 1024;

/// The most image bytes whose base64 fits a synchronous request (base64
/// turns 3 bytes into 4): 4,718,592. The JSON around them needs a little
/// more room, which a caller leaves.
pub const SYNC_REQUEST_RAW_BYTES: usize = SYNC_REQUEST_BYTES / 4 * 3;

/// The most images one face-crop request may carry: a call's images run
/// one after another, so its duration grows with each.
pub const MAX_IMAGES_PER_REQUEST: usize = 16;
/// The most crops one classify request may carry.
pub const MAX_CROPS_PER_REQUEST: usize = 256;
/// The largest crop side a classify request may carry.
pub const MAX_CROP_SIDE: u32 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_bytes_that_fit_encode_within_the_request_limit() {
        assert_eq!(SYNC_REQUEST_RAW_BYTES, 4_718_592);
        assert!(SYNC_REQUEST_RAW_BYTES.div_ceil(3) * 4 <= SYNC_REQUEST_BYTES);
    }
}
