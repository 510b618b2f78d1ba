//! `chainrule playground`: the static server of the browser playground, through the
//! binary and plain HTTP requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "chainrule-playground-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running server, killed when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `chainrule playground --dir DIR --port 0` and reads the address it prints.
fn serve(dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .args(["playground", "--port", "0", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Server { child, address }
}

/// The status code, the headers and the body of `GET path`.
fn get(address: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

#[test]
fn the_playground_serves_its_folder_and_nothing_outside_it() {
    let dir = scratch("serve");
    let site = dir.join("dist");
    std::fs::create_dir_all(site.join("pkg")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>playground</h1>").unwrap();
    std::fs::write(site.join("pkg/x.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.join("secret.txt"), "not for the web").unwrap();
    let server = serve(&site);
    assert!(
        server.address.starts_with("127.0.0.1:"),
        "{}",
        server.address
    );
    let (status, head, body) = get(&server.address, "/");
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"<h1>playground</h1>"[..])
    );
    assert!(head.contains("Content-Type: text/html"), "{head}");
    let (status, head, body) = get(&server.address, "/pkg/x.wasm?v=1");
    assert_eq!((status, body.len()), (200, 8));
    assert!(head.contains("Content-Type: application/wasm"), "{head}");
    for outside in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/pkg/..%2F..%2Fsecret.txt",
    ] {
        let (status, _, body) = get(&server.address, outside);
        assert_eq!(status, 403, "{outside}");
        assert!(!String::from_utf8_lossy(&body).contains("not for the web"));
    }
    assert_eq!(get(&server.address, "/missing.js").0, 404);
}

#[test]
fn a_missing_site_or_a_public_address_is_refused_with_one_line() {
    let dir = scratch("refuse");
    let out = Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .args(["playground", "--dir"])
        .arg(dir.join("dist"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("web/build.sh") && stderr.contains("dist"),
        "{stderr}"
    );
    std::fs::create_dir_all(dir.join("dist")).unwrap();
    std::fs::write(dir.join("dist/index.html"), "x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chainrule"))
        .args(["playground", "--port", "0", "--host", "0.0.0.0", "--dir"])
        .arg(dir.join("dist"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}
