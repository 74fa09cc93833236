//! The web UI in a real browser: Debian's Chromium, headless, driven over
//! WebDriver (`chromedriver`) against real `wasmos` processes on loopback.
//! One browser session serves the whole file; `scripts/test` installs
//! `chromium` and `chromium-driver` when they are missing. Screenshots of
//! the pages go to `target/webui/`.

mod support;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Cluster, guest, http_get, output_within, wait_for};

const LIMIT: Duration = Duration::from_secs(120);
/// How long a page may take to show what it should (generous: a loaded
/// 2-core machine).
const PATIENCE: Duration = Duration::from_secs(60);

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium behind its chromedriver, with a fresh profile.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts the browser, ignoring certificate errors only for servers
    /// whose key hashes to one of `pinned` (base64 SHA-256 of the SPKI).
    async fn start(pinned: &[String]) -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: `scripts/test` installs Debian's chromium and chromium-driver"
            );
        }
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().unwrap().port()
        };
        let mut driver = Command::new(CHROMEDRIVER);
        driver
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that the browsers it starts die
            // with it (see `Drop`).
            .process_group(0);
        let driver = driver.spawn().expect("start chromedriver");
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut args = vec![
            "--headless=new".to_string(),
            // Root in a container: Chromium's own sandbox cannot start.
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            // Nothing dials hosts this machine cannot reach.
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-default-apps".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--metrics-recording-only".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if !pinned.is_empty() {
            args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                pinned.join(",")
            ));
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&webdriver)
                .await
            {
                Ok(client) => break client,
                Err(e) if started.elapsed() < PATIENCE => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session on {webdriver}: {e}"),
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The text of the first element `css` finds on the page as it is now.
    async fn text(&self, css: &str) -> String {
        self.element(css).await.text().await.unwrap_or_default()
    }

    /// Waits until the first `css` element's text satisfies `ready`,
    /// without reloading: the page must update itself.
    async fn wait_text(&self, css: &str, ready: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < PATIENCE {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                last = element.text().await.unwrap_or_default();
                if ready(&last) {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "`{css}` on {} never got there; last: {last:?}",
            self.url().await
        );
    }

    /// The element `css` finds, or a panic naming the page.
    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) => panic!("no `{css}` on {}: {e}", self.url().await),
        }
    }

    /// Replaces the text of the field `css` finds with `text`.
    async fn fill(&self, css: &str, text: &str) {
        let field = self.element(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.element(css).await.click().await.unwrap();
    }

    async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    async fn run(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Marks the page; [`Browser::still_marked`] then says whether it was
    /// never reloaded.
    async fn mark(&self) {
        self.run("window.wasmosTestMark = 1;").await;
    }

    async fn still_marked(&self) -> bool {
        self.run("return window.wasmosTestMark === 1;").await == json!(true)
    }

    /// The errors the page's own collector saw (script errors and CSP
    /// violations); panics when the page's script did not even load.
    async fn errors(&self) -> Vec<String> {
        let errors = self.run("return window.wasmosErrors ?? null;").await;
        let Value::Array(errors) = errors else {
            panic!("the page's script did not run on {}", self.url().await);
        };
        errors
            .into_iter()
            .map(|e| e.as_str().unwrap_or_default().to_string())
            .collect()
    }

    async fn assert_clean(&self) {
        let errors = self.errors().await;
        assert!(errors.is_empty(), "on {}: {errors:?}", self.url().await);
    }

    async fn screenshot(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/webui");
        std::fs::create_dir_all(&dir).expect("target/webui");
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(dir.join(format!("{name}.png")), png);
        }
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and every browser it started.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

/// The base64 SHA-256 of the public key of the certificate `https_url`
/// serves (verified against the cluster's CA first): what Chromium's
/// `--ignore-certificate-errors-spki-list` pins.
fn spki_pin(https_url: &str, ca_pem: &str) -> String {
    let host = https_url.strip_prefix("https://").expect("https URL");
    let config = wasmos_tls::ClientTls::trusting(ca_pem)
        .rustls()
        .expect("client TLS");
    let mut conn =
        rustls::ClientConnection::new(config, "127.0.0.1".try_into().unwrap()).expect("TLS client");
    let mut tcp = std::net::TcpStream::connect(host).expect("connect");
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .expect("a TLS handshake the CA verifies");
    }
    let leaf = conn.peer_certificates().expect("a certificate")[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("an X.509 certificate");
    let spki = cert.tbs_certificate.subject_pki.raw;
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `wasmos ARGS` against `cluster` (as `token`, or its admin).
fn cli(cluster: &Cluster, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = cluster.cli();
    cmd.env("WASMOS_MASTER", &cluster.url).args(args);
    if let Some(token) = token {
        cmd.env("WASMOS_TOKEN", token);
    }
    output_within(cmd, LIMIT)
}

fn cli_ok(cluster: &Cluster, token: Option<&str>, args: &[&str]) -> String {
    let o = cli(cluster, token, args);
    assert!(o.status.success(), "wasmos {args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

/// Submits a job of `module` and returns its id.
fn submit(
    cluster: &Cluster,
    token: Option<&str>,
    module: &str,
    options: &[&str],
    args: &[&str],
) -> String {
    let path = guest(module);
    let mut all = vec!["submit", path.to_str().unwrap()];
    all.extend(options);
    all.push("--");
    all.extend(args);
    let id = cli_ok(cluster, token, &all).trim().to_string();
    assert!(id.starts_with('j'), "{id}");
    id
}

fn job_state(cluster: &Cluster, job: &str) -> String {
    let shown: Value =
        serde_json::from_str(&cli_ok(cluster, None, &["job", "show", job, "--json"]))
            .expect("job show --json");
    shown["state"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_in_a_real_browser() {
    let tls = tokio::task::spawn_blocking(|| Cluster::start_tls(1, &[], &[]))
        .await
        .unwrap();
    let plain = tokio::task::spawn_blocking(|| Cluster::start(2, &[], &[]))
        .await
        .unwrap();
    let pin = spki_pin(&tls.http, &tls.tls.as_ref().unwrap().ca_pem);
    let browser = Browser::start(&[pin]).await;

    on_a_local_cluster(&browser, &plain).await;
    on_a_tls_master(&browser, &tls).await;

    browser.close().await;
}

/// An insecure master, as `wasmos local` runs one: no login, everyone is
/// the local admin.
async fn on_a_local_cluster(browser: &Browser, cluster: &Cluster) {
    let base = &cluster.http;

    // The overview shows the running cluster's agents and roles.
    browser.goto(&format!("{base}/")).await;
    assert_eq!(browser.text(".cards .card .big").await, "2", "two agents");
    browser.assert_clean().await;

    // A running job's progress reaches 100% on its page, which updates
    // itself: it is never reloaded.
    let sleepers = submit(
        cluster,
        None,
        "sleeper",
        &["-n", "6", "--cpus", "0.5"],
        &["1500"],
    );
    browser.goto(&format!("{base}/ui/jobs/{sleepers}")).await;
    browser.mark().await;
    browser
        .wait_text(".bar span", |t| t.contains("(100%)"))
        .await;
    assert!(browser.still_marked().await, "the job page reloaded");
    browser.assert_clean().await;

    // A task's log follows live while it runs.
    let ticker = submit(cluster, None, "ticker", &[], &["30", "150"]);
    let task = format!("{ticker}-0-1");
    wait_for(PATIENCE, || {
        http_get(&format!("{base}/ui/api/tasks?job={ticker}&state=RUNNING"))
            .contains(&task)
            .then_some(())
    })
    .expect("the ticker runs");
    browser.goto(&format!("{base}/ui/tasks/{task}")).await;
    browser.mark().await;
    let first = browser.text("pre#stdout").await;
    assert!(
        !first.contains("done"),
        "the log was complete at once: {first}"
    );
    browser
        .wait_text("pre#stdout", |t| t.contains("done"))
        .await;
    assert!(browser.still_marked().await, "the task page reloaded");
    let log = browser.text("pre#stdout").await;
    for i in 0..30 {
        assert_eq!(
            log.matches(&format!("tick {i}\n")).count(),
            1,
            "each line once, in order: {log}"
        );
    }
    browser.assert_clean().await;

    // A failed task's page shows its reason and its stderr.
    let failing = submit(cluster, None, "exitcode", &[], &["7"]);
    cli(cluster, None, &["job", "wait", &failing]);
    browser
        .goto(&format!("{base}/ui/tasks/{failing}-0-1"))
        .await;
    assert_eq!(browser.text("dd.reason").await, "EXIT_NONZERO");
    assert!(
        browser
            .text("pre#stderr")
            .await
            .contains("failing on purpose with 7"),
        "{}",
        browser.text("pre#stderr").await
    );
    browser.screenshot("failed-task").await;
    // Its job's page groups the failure under its reason, with its message.
    browser.goto(&format!("{base}/ui/jobs/{failing}")).await;
    let failures = browser.text("main").await;
    assert!(failures.contains("EXIT_NONZERO (1)"), "{failures}");
    assert!(failures.contains("exited with code 7"), "{failures}");
    assert!(
        failures.contains("exiting with 7"),
        "the stdout head: {failures}"
    );

    // Hostile names and output are shown as text and never run.
    let hostile_name = "<script>window.pwned = 1</script>";
    let hostile = submit(
        cluster,
        None,
        "hello",
        &["--name", hostile_name],
        &[
            "<img src=x onerror=\"window.pwned = 2\">",
            "<script>window.pwned = 3</script>",
        ],
    );
    cli_ok(cluster, None, &["job", "wait", &hostile]);
    browser.goto(&format!("{base}/ui/jobs")).await;
    assert!(browser.text("main table").await.contains(hostile_name));
    browser.goto(&format!("{base}/ui/jobs/{hostile}")).await;
    assert!(browser.text("main dl").await.contains(hostile_name));
    browser
        .goto(&format!("{base}/ui/tasks/{hostile}-0-1"))
        .await;
    let stdout = browser.wait_text("pre#stdout", |t| !t.is_empty()).await;
    assert!(stdout.contains("onerror=\"window.pwned = 2\""), "{stdout}");
    assert!(
        stdout.contains("<script>window.pwned = 3</script>"),
        "{stdout}"
    );
    assert_eq!(
        browser.run("return window.pwned ?? null;").await,
        Value::Null
    );
    browser.assert_clean().await;

    // A weight changed on the page reaches `wasmos roles`.
    browser.goto(&format!("{base}/ui/roles")).await;
    browser
        .fill("form[action='/ui/roles/default'] input[name=weight]", "3")
        .await;
    browser
        .click("form[action='/ui/roles/default'] button")
        .await;
    // The form posts and the browser follows the redirect in its own time.
    let weight_of_default = || -> Value {
        let listed = cli_ok(cluster, None, &["roles", "--json"]);
        let line = listed
            .lines()
            .find(|l| l.contains("\"default\""))
            .expect("role default");
        serde_json::from_str::<Value>(line).unwrap()["weight"].clone()
    };
    wait_for(PATIENCE, || {
        (weight_of_default() == json!(3.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("weight {} after the form", weight_of_default()));

    // The agents page shows both, connected and heard from lately.
    browser.goto(&format!("{base}/ui/agents")).await;
    let agents = browser.text("main table").await;
    assert_eq!(agents.matches("connected").count(), 2, "{agents}");
    assert!(agents.contains("os=linux"), "{agents}");
    let counted = browser.text("main").await;
    assert!(counted.contains("2 agents."), "{counted}");
    // (Today's date or, just past midnight, yesterday's.)
    let days = browser
        .run(
            "const day = (ms) => new Date(ms).toISOString().slice(0, 10);
             return [day(Date.now()), day(Date.now() - 86400000)];",
        )
        .await;
    let heard = |day: &Value| agents.matches(day.as_str().unwrap()).count();
    assert_eq!(
        heard(&days[0]) + heard(&days[1]),
        2,
        "a last-heard time for each: {agents}"
    );

    // The overview, once jobs ran, shows their role and its weight.
    browser.goto(&format!("{base}/")).await;
    let roles = browser.text("main section:last-child table").await;
    assert!(roles.contains("default 3"), "the roles: {roles}");
    browser.assert_clean().await;
    browser.screenshot("overview").await;
    for page in ["jobs", "tasks", "agents", "roles", "usage"] {
        browser.goto(&format!("{base}/ui/{page}")).await;
        browser.assert_clean().await;
        browser.screenshot(page).await;
    }
}

/// A TLS master: the browser trusts its certificate by pin, logs in with
/// a token, sees only what that token's principal may see, and a change
/// without the session's CSRF token is refused.
async fn on_a_tls_master(browser: &Browser, cluster: &Cluster) {
    let base = &cluster.http;
    let alice = cluster.token(&["--principal", "alice", "--roles", "default"]);
    let bob = cluster.token(&["--principal", "bob", "--roles", "default"]);
    let alices = submit(cluster, Some(&alice), "hello", &["--hold"], &[]);
    let bobs = submit(cluster, Some(&bob), "hello", &["--hold"], &[]);

    browser.goto(&format!("{base}/ui/jobs")).await;
    assert!(
        browser.url().await.ends_with("/ui/login"),
        "no session: the login page, not {}",
        browser.url().await
    );
    browser.fill("input[name=token]", "not-a-token").await;
    browser.click("form.login button").await;
    browser.wait_text("p.error", |t| t.contains("Bearer")).await;

    browser.fill("input[name=token]", &bob).await;
    browser.click("form.login button").await;
    browser
        .wait_text("header .who", |t| t.contains("bob"))
        .await;
    let cookie = browser
        .client
        .get_named_cookie("wasmos_session")
        .await
        .unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert!(
        !cookie.value().contains(&bob) && !bob.contains(cookie.value()),
        "the cookie holds a session id, never the token"
    );

    // Bob sees his job and not Alice's.
    browser.goto(&format!("{base}/ui/jobs")).await;
    let listed = browser.text("main").await;
    assert!(listed.contains(&bobs), "{listed}");
    assert!(!listed.contains(&alices), "{listed}");
    browser.goto(&format!("{base}/ui/jobs/{alices}")).await;
    assert!(browser.text("p.error").await.contains("no such job"));

    // A change without the session's CSRF token is refused; the form's own
    // works.
    browser.goto(&format!("{base}/ui/jobs/{bobs}")).await;
    let forged = browser
        .client
        .execute_async(
            &format!(
                "const done = arguments[arguments.length - 1];
                 Promise.all([
                   fetch('/ui/jobs/{bobs}/cancel', {{ method: 'POST' }}),
                   fetch('/ui/jobs/{bobs}/cancel', {{ method: 'POST',
                     body: new URLSearchParams({{ csrf: '{}' }}) }}),
                 ]).then(rs => done(rs.map(r => r.status)));",
                "0".repeat(64)
            ),
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(forged, json!([403, 403]));
    assert_eq!(job_state(cluster, &bobs), "HELD");
    browser
        .click(&format!("form[action='/ui/jobs/{bobs}/cancel'] button"))
        .await;
    wait_for(PATIENCE, || {
        (job_state(cluster, &bobs) == "CANCELLED").then_some(())
    })
    .expect("the job is cancelled");
    browser.assert_clean().await;
    browser.screenshot("tls-job").await;

    // A revoked token ends its session at the next page.
    let accessor = bob.split('.').next().unwrap();
    cli_ok(cluster, None, &["token", "revoke", accessor]);
    browser.goto(&format!("{base}/ui/jobs")).await;
    assert!(
        browser.url().await.contains("/ui/login"),
        "{}",
        browser.url().await
    );
    assert!(browser.text("p.error").await.contains("revoked"));
}

/// The head of the answer to `GET /` sent to `cluster` with `host` as the
/// Host header.
fn head_of_get_as(cluster: &Cluster, host: &str) -> String {
    use std::io::{Read, Write};
    let address = cluster.http.strip_prefix("http://").expect("plaintext");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map_or(response.clone(), |(head, _)| head.to_ascii_lowercase())
}

#[test]
fn a_master_without_logins_serves_its_ui_only_at_its_address() {
    let cluster = Cluster::start(1, &[], &[]);
    let address = cluster.http.strip_prefix("http://").unwrap().to_string();
    let head = head_of_get_as(&cluster, &address);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let port = address.rsplit_once(':').unwrap().1;
    let head = head_of_get_as(&cluster, &format!("localhost:{port}"));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // A name that resolves to loopback is another site (DNS rebinding).
    let head = head_of_get_as(&cluster, &format!("rebound.example:{port}"));
    assert!(head.starts_with("http/1.1 421"), "{head}");
}
