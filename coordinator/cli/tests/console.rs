//! The staff console in a real browser: Debian's headless Chromium driven
//! by chromedriver over WebDriver (fantoccini), against the admin trigger
//! on the real services. Signs in, labels the fixture photo, looks up a
//! stored and a dead-lettered job, replays a reason, and saves a
//! screenshot of each screen (to `LAMBDEX_SCREENSHOTS_DIR`, or
//! `console-screens/` in the system's temp folder).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use fantoccini::{Client, ClientBuilder, Locator};
use lambdex::pipeline::aggregate::{self, Timings};
use lambdex::sink::Sink;
use lambdex_proto::{Failure, FailureClass, Job};
use lambdex_tests::admin::Admin;
use lambdex_tests::services::{self, Elastic};
use lambdex_tests::world::World;

const LAMBDEX: &str = env!("CARGO_BIN_EXE_lambdex");
/// How long the page may take to show what a step waits for.
const PATIENCE: Duration = Duration::from_secs(30);
/// Where Debian's packages put them.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the browser tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver (.ci/run does)"
        );
        let port = services::free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn browser(&self) -> Client {
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }
        });
        let capabilities = capabilities.as_object().expect("an object").clone();
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&self.url)
                .await
            {
                Ok(client) => return client,
                Err(error) if std::time::Instant::now() > deadline => {
                    panic!("no browser session from chromedriver: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshots_dir() -> PathBuf {
    let dir = std::env::var_os("LAMBDEX_SCREENSHOTS_DIR").map_or_else(
        || std::env::temp_dir().join("console-screens"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).expect("the screenshots folder");
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).expect("saved");
}

/// The text of `css` once it contains `expected`.
async fn wait_for_text(browser: &Client, css: &str, expected: &str) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let text = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(expected) {
            return text;
        }
        let error = match browser.find(Locator::Id("error")).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        assert!(
            std::time::Instant::now() < deadline,
            "{css} never said {expected:?}: it says {text:?}; the page's error: {error:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The console's page at `fragment` (`#label`, or empty for the start).
async fn open(browser: &Client, admin: &Admin, fragment: &str) {
    browser
        .goto(&format!("{}/{fragment}", admin.url))
        .await
        .unwrap_or_else(|error| panic!("the console at /{fragment}: {error}"));
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("{css}: {error}"))
        .click()
        .await
        .unwrap_or_else(|error| panic!("clicking {css}: {error}"));
}

async fn type_into(browser: &Client, css: &str, text: &str) {
    let element = browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("{css}: {error}"));
    element.clear().await.expect("cleared");
    element.send_keys(text).await.expect("typed");
}

/// Seeds a dead-lettered job the way the worker leaves one: its failed
/// document in the index and its dead letter in the queue.
async fn seed_dead_job(world: &World, id: &str) {
    let job = Job::new(id, world.images.url("missing.png?console"));
    let failure = Failure::new(
        FailureClass::FetchStatus,
        format!("{} answered HTTP 404", job.image_url),
        false,
    );
    let (sink, task) = Sink::start(&world.config.elasticsearch).expect("the sink");
    sink.write(aggregate::failed(&job, failure, Timings::default()))
        .await
        .expect("stored");
    drop(sink);
    task.await.expect("the sink ends");
    world
        .publish_dead_letter(
            &serde_json::to_vec(&job).expect("JSON"),
            "fetch_status",
            &Utc::now().to_rfc3339(),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn staff_sign_in_label_a_photo_look_up_jobs_and_replay_dead_letters_in_a_browser() {
    let world = World::new(LAMBDEX, Elastic::Noida, &[]).await;
    let admin = Admin::start(&world, |_| {}).await;
    seed_dead_job(&world, "console-lost").await;
    let driver = Driver::start();
    let browser = driver.browser().await;

    // Sign in.
    open(&browser, &admin, "").await;
    wait_for_text(&browser, "#screen-sign-in h2", "Sign in").await;
    screenshot(&browser, "1-sign-in").await;
    type_into(&browser, "#token", "ldx_not-a-token").await;
    click(&browser, "#sign-in-form button").await;
    wait_for_text(&browser, "#error", "the token is not valid").await;
    type_into(&browser, "#token", &admin.token).await;
    click(&browser, "#sign-in-form button").await;
    wait_for_text(&browser, "#who-name", "Signed in as support").await;

    // Label the fixture photo, and store it.
    open(&browser, &admin, "#label").await;
    let photo = lambdex_tests::fixture("astronaut.png");
    browser
        .find(Locator::Id("file"))
        .await
        .expect("the file input")
        .send_keys(photo.to_str().expect("a UTF-8 path"))
        .await
        .expect("the photo picked");
    click(&browser, "#store").await;
    type_into(&browser, "#job-id", "console-astronaut").await;
    click(&browser, "#label-form button[type=submit]").await;
    wait_for_text(
        &browser,
        "#status",
        "Labelled and stored as console-astronaut",
    )
    .await;
    let faces = wait_for_text(&browser, "#label-faces", "Age").await;
    let rows = browser
        .find_all(Locator::Css("#label-faces tbody tr"))
        .await
        .expect("the faces' rows");
    assert_eq!(rows.len(), 1, "{faces}");
    let canvas_width: u64 = browser
        .execute(
            "return document.getElementById('label-canvas').width;",
            vec![],
        )
        .await
        .expect("the canvas")
        .as_u64()
        .expect("a width");
    assert_eq!(canvas_width, 512, "the photo is drawn at its own size");
    screenshot(&browser, "2-label").await;

    // Look up the stored job, then the dead-lettered one.
    open(&browser, &admin, "#job").await;
    type_into(&browser, "#lookup-id", "console-astronaut").await;
    click(&browser, "#job-form button").await;
    wait_for_text(&browser, "#job-state", "stored").await;
    wait_for_text(&browser, "#job-faces", "female").await;
    screenshot(&browser, "3-job-stored").await;
    type_into(&browser, "#lookup-id", "console-lost").await;
    click(&browser, "#job-form button").await;
    wait_for_text(&browser, "#job-state", "failed (dead-lettered)").await;
    wait_for_text(&browser, "#job-failure", "fetch_status").await;
    wait_for_text(&browser, "#job-failure", "HTTP 404").await;
    screenshot(&browser, "4-job-failed").await;

    // The dead letters, by reason; replay the reason after a count.
    open(&browser, &admin, "#dead-letters").await;
    wait_for_text(&browser, "#letters-total", "1").await;
    wait_for_text(&browser, "#reasons tbody", "fetch_status").await;
    wait_for_text(&browser, "#latest tbody", "console-lost").await;
    screenshot(&browser, "5-dead-letters").await;
    click(&browser, "#reasons button[data-reason=fetch_status]").await;
    wait_for_text(
        &browser,
        "#replay-question",
        "Replay 1 dead letter of reason fetch_status?",
    )
    .await;
    click(&browser, "#replay-yes").await;
    wait_for_text(
        &browser,
        "#replay-outcome",
        "Replayed 1 dead letter of reason fetch_status.",
    )
    .await;
    wait_for_text(&browser, "#letters-total", "0").await;
    screenshot(&browser, "6-replayed").await;
    assert_eq!(world.ready_in(&world.topology().dead_queue).await, 0);
    assert_eq!(
        world.ready_in(&world.topology().jobs_queue).await,
        1,
        "the replayed job is back in the queue"
    );

    // At a glance: the admin's own counts and the queues.
    open(&browser, &admin, "#glance").await;
    wait_for_text(&browser, "#glance-tables", "Messages ready").await;
    wait_for_text(&browser, "#glance-tables", "face-crop").await;
    screenshot(&browser, "7-glance").await;

    browser.close().await.expect("the browser closes");
    drop(driver);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_sees_only_the_screens_its_scopes_allow() {
    let world = World::new(LAMBDEX, Elastic::Noida, &[]).await;
    let viewer = lambdex::admin::new_token().expect("random bytes");
    let admin = Admin::start(&world, |config| {
        config.admin.tokens.push(lambdex::config::AdminToken {
            name: "viewer".to_owned(),
            sha256: lambdex::admin::hash_token(&viewer),
            scopes: Some([lambdex::config::Scope::Read].into()),
        });
    })
    .await;
    let driver = Driver::start();
    let browser = driver.browser().await;
    open(&browser, &admin, "").await;
    type_into(&browser, "#token", &viewer).await;
    click(&browser, "#sign-in-form button").await;
    wait_for_text(&browser, "#who-name", "Signed in as viewer (read)").await;
    let visible = |css: &'static str| {
        let browser = browser.clone();
        async move {
            browser
                .find(Locator::Css(css))
                .await
                .expect("the element")
                .is_displayed()
                .await
                .expect("displayed or not")
        }
    };
    assert!(!visible("#nav a[href='#label']").await, "no predict scope");
    assert!(visible("#nav a[href='#job']").await);
    // Asked for by address, a screen the token may not use is not shown.
    open(&browser, &admin, "#label").await;
    wait_for_text(&browser, "#screen-glance h2", "At a glance").await;
    assert!(!visible("#screen-label").await);
    browser.close().await.expect("the browser closes");
    drop(driver);
    world.finish().await;
}
