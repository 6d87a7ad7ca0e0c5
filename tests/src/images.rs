//! One image server for every suite and bench: good images, and the
//! hostile answers a download must survive, on 127.0.0.1.
//!
//! | path | what |
//! |---|---|
//! | `/astronaut.png` (any query) | the fixture photo, one face |
//! | `/two-faces.jpg`, `/three-faces.jpg` | the astronaut side by side, 320 px each |
//! | `/no-face.jpg` | shapes and gradients, no face |
//! | `/gradient.jpg` | a small 320×240 JPEG (the benches' image) |
//! | `/missing.jpg`, `/missing.png` | 404 |
//! | `/slow.jpg` | answers after 5 s |
//! | `/huge.jpg` | 2 MB of nothing that is an image |
//! | `/page.jpg` | HTML with an image's name |
//! | `/to-metadata.jpg` | a redirect to the instance metadata address |
//! | `/bomb.png` | a PNG whose header claims 50,000 × 50,000 pixels |
//! | `/truncated.png` | the astronaut cut in the middle of its pixel data |
//! | `/throttled.jpg` | 429 with `Retry-After: 4294967295` |
//! | `/drip.jpg` | a JPEG's first bytes, then one byte a second, for ever |
//! | `/gigabyte.jpg` | a JPEG's first bytes, then 1 GiB of zeros, no `Content-Length` |
//! | `/loop.jpg` | a redirect to itself |
//! | `/to-credentials.jpg` | a redirect to this server's astronaut with `bob:PASSWORD@` |
//! | `/40mp.png` | a 40-megapixel PNG of about 10 MB (made on first use) |

use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::Redirect;
use axum::routing::get;
use futures::StreamExt as _;
use image::ImageEncoder as _;

use crate::{Scene, astronaut_png, encode, encode_jpeg, no_face};

/// A running image server; stopped when dropped.
#[derive(Debug)]
pub struct ImageServer {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl ImageServer {
    /// Serves every path above on a free port.
    pub async fn start() -> std::io::Result<Self> {
        let image = |content_type: &'static str, bytes: Vec<u8>| {
            let bytes = axum::body::Bytes::from(bytes);
            move || {
                let bytes = bytes.clone();
                async move { ([(header::CONTENT_TYPE, content_type)], bytes) }
            }
        };
        let app = axum::Router::new()
            .route("/astronaut.png", get(image("image/png", astronaut_png())))
            .route(
                "/two-faces.jpg",
                get(image(
                    "image/jpeg",
                    encode_jpeg(&Scene::grid(2, 1, 320).image, 92),
                )),
            )
            .route(
                "/three-faces.jpg",
                get(image(
                    "image/jpeg",
                    encode_jpeg(&Scene::grid(3, 1, 320).image, 92),
                )),
            )
            .route(
                "/no-face.jpg",
                get(image("image/jpeg", encode_jpeg(&no_face(), 92))),
            )
            .route("/gradient.jpg", get(image("image/jpeg", gradient_jpeg())))
            .route("/missing.jpg", get(|| async { StatusCode::NOT_FOUND }))
            .route("/missing.png", get(|| async { StatusCode::NOT_FOUND }))
            .route(
                "/slow.jpg",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    StatusCode::OK
                }),
            )
            .route("/huge.jpg", get(image("image/jpeg", vec![0xff; 2_000_000])))
            .route(
                "/page.jpg",
                get(image("image/jpeg", b"<html>not an image</html>".to_vec())),
            )
            .route(
                "/to-metadata.jpg",
                get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
            )
            .route("/bomb.png", get(image("image/png", decompression_bomb())))
            // Sound headers (the coordinator's check passes), half the pixels.
            .route("/truncated.png", get(image("image/png", truncated_png())))
            .route(
                "/throttled.jpg",
                get(|| async {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(header::RETRY_AFTER, "4294967295")],
                    )
                }),
            )
            .route("/drip.jpg", get(|| async { drip() }))
            .route("/gigabyte.jpg", get(|| async { gigabyte() }))
            .route(
                "/loop.jpg",
                get(|| async { Redirect::temporary("/loop.jpg") }),
            )
            .route(
                "/to-credentials.jpg",
                get(|headers: axum::http::HeaderMap| async move {
                    let host = headers
                        .get(header::HOST)
                        .and_then(|host| host.to_str().ok())
                        .unwrap_or("localhost")
                        .to_owned();
                    Redirect::temporary(&format!("http://bob:PASSWORD@{host}/astronaut.png"))
                }),
            )
            .route(
                "/40mp.png",
                get(|| async {
                    let png = tokio::task::spawn_blocking(|| forty_megapixels().to_vec())
                        .await
                        .unwrap_or_default();
                    ([(header::CONTENT_TYPE, "image/png")], png)
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { base, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL of `path` (`two-faces.jpg`, `astronaut.png?n=3`…).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A JPEG's first bytes, then one byte a second, never ending.
fn drip() -> axum::body::Body {
    let start = futures::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from_static(
        b"\xff\xd8\xff\xe0",
    ))]);
    let rest = futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some((Ok(axum::body::Bytes::from_static(b"\0")), ()))
    });
    axum::body::Body::from_stream(start.chain(rest))
}

/// A JPEG's first bytes, then 1 GiB of zeros in 64 KiB chunks, its
/// length unannounced.
fn gigabyte() -> axum::body::Body {
    const CHUNK: usize = 64 * 1024;
    let start = axum::body::Bytes::from_static(b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01");
    let chunk = axum::body::Bytes::from(vec![0u8; CHUNK]);
    let chunks = (1usize << 30) / CHUNK;
    axum::body::Body::from_stream(futures::stream::iter(
        std::iter::once(start)
            .chain(std::iter::repeat_n(chunk, chunks))
            .map(Ok::<_, std::io::Error>),
    ))
}

/// A 40-megapixel PNG (7,296 × 5,472, just under the default pixel cap)
/// that must be decoded to be sent: mostly flat, a row of noise in
/// twelve, about 10 MB. Made once.
pub fn forty_megapixels() -> &'static [u8] {
    static PNG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PNG.get_or_init(|| {
        let (width, height) = (7296, 5472);
        let mut rng = fastrand::Rng::with_seed(40);
        let picture = image::RgbImage::from_fn(width, height, |x, y| {
            if y % 12 == 0 {
                image::Rgb([rng.u8(..), rng.u8(..), rng.u8(..)])
            } else {
                image::Rgb([(x / 29) as u8, (y / 22) as u8, 90])
            }
        });
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new_with_quality(
            &mut out,
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::Sub,
        )
        .write_image(&picture, width, height, image::ExtendedColorType::Rgb8)
        .expect("a PNG encodes in memory");
        out
    })
}

/// A small JPEG of gradients, the benches' image: cheap to fetch and check.
pub fn gradient_jpeg() -> Vec<u8> {
    let picture = image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([x as u8, y as u8, 128]));
    encode(&picture, image::ImageFormat::Jpeg)
}

/// A PNG whose header claims 50,000 × 50,000 pixels.
pub fn decompression_bomb() -> Vec<u8> {
    let mut png = encode(&no_face(), image::ImageFormat::Png);
    // IHDR data starts at byte 16: width, height, then 5 more bytes, then the CRC.
    png[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// The astronaut's PNG cut in the middle of its pixel data.
pub fn truncated_png() -> Vec<u8> {
    let png = astronaut_png();
    png[..png.len() / 2].to_vec()
}
