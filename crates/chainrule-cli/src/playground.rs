//! `chainrule playground`: serves the built playground (web/dist) over HTTP on the
//! loopback interface, so that a user needs no other server. A page that loads
//! WebAssembly modules must come over HTTP (browsers refuse `file://` modules).
//!
//! The server is deliberately tiny: GET and HEAD of files under one folder, one
//! thread per connection, no keep-alive. A request whose path leaves the folder (by
//! `..`, an absolute path, or a symbolic link pointing out) gets 403.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// `chainrule playground` flags.
#[derive(Args, Debug)]
pub struct PlaygroundArgs {
    /// The built site (web/build.sh writes it).
    #[arg(long, default_value = "web/dist")]
    pub dir: PathBuf,
    /// The port (0: any free port; the address printed says which).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The interface to listen on. Anything but a loopback address also needs
    /// --allow-remote, as it shows the page to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Allow a --host that is not a loopback address.
    #[arg(long)]
    pub allow_remote: bool,
}

/// Serves `args.dir` until the process is stopped; prints the address first.
///
/// # Errors
/// A missing site (with the command that builds it), a non-loopback host without
/// `--allow-remote`, a port that cannot be bound.
pub fn run(args: &PlaygroundArgs) -> Result<()> {
    if !args.dir.join("index.html").is_file() {
        bail!(
            "{}: no built playground here (index.html is missing); build it with web/build.sh \
             from the repository's root, or name the folder with --dir",
            args.dir.display()
        );
    }
    if !args.host.is_loopback() && !args.allow_remote {
        bail!(
            "--host {}: not a loopback address; add --allow-remote to serve the playground \
             to other machines",
            args.host
        );
    }
    let root = args
        .dir
        .canonicalize()
        .with_context(|| format!("{}", args.dir.display()))?;
    let listener = TcpListener::bind(SocketAddr::new(args.host, args.port))
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let address = listener.local_addr()?;
    let host = match address.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    println!(
        "chainrule playground: serving {} at http://{host}:{}/ (Ctrl-C stops)",
        root.display(),
        address.port()
    );
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let root = root.clone();
        std::thread::spawn(move || {
            // A client that goes away mid-answer is its own business.
            let _ = answer(stream, &root);
        });
    }
    Ok(())
}

/// Reads one request and writes its answer.
fn answer(stream: TcpStream, root: &Path) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers are not needed; read them so the client sees a clean close.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut out = stream;
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return reply(&mut out, 405, "text/plain", b"only GET and HEAD\n", true);
    }
    let head_only = method == "HEAD";
    let path = target.split(['?', '#']).next().unwrap_or("");
    match resolve(root, path) {
        Resolved::File(file) => match std::fs::read(&file) {
            Ok(body) => reply(&mut out, 200, content_type(&file), &body, !head_only),
            Err(_) => reply(&mut out, 404, "text/plain", b"not found\n", !head_only),
        },
        Resolved::Outside => reply(
            &mut out,
            403,
            "text/plain",
            b"outside the playground\n",
            !head_only,
        ),
        Resolved::Missing => reply(&mut out, 404, "text/plain", b"not found\n", !head_only),
    }
}

/// Where a request's path leads.
#[derive(Debug, PartialEq, Eq)]
enum Resolved {
    /// A file inside the root.
    File(PathBuf),
    /// Out of the root (`..`, a link out, a malformed escape).
    Outside,
    /// Nothing there.
    Missing,
}

/// The file a URL path names under `root` (already canonical): `/` and folders give
/// their index.html.
fn resolve(root: &Path, url_path: &str) -> Resolved {
    let Some(decoded) = percent_decode(url_path) else {
        return Resolved::Outside;
    };
    let relative = Path::new(decoded.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Resolved::Outside;
    }
    let mut file = root.join(relative);
    if file.is_dir() {
        file = file.join("index.html");
    }
    match file.canonicalize() {
        // A symbolic link inside the folder may still point out of it.
        Ok(real) if !real.starts_with(root) => Resolved::Outside,
        Ok(real) if real.is_file() => Resolved::File(real),
        _ => Resolved::Missing,
    }
}

/// `%2e%2E` → `..`; `None` for a malformed escape or bytes that are not UTF-8 (or a
/// NUL, which no file name holds).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// The media type by extension; WebAssembly must be `application/wasm` for the
/// browser's streaming compile.
fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "txt" | "md" | "formula" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn reply(
    out: &mut TcpStream,
    status: u16,
    kind: &str,
    body: &[u8],
    with_body: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if with_body {
        out.write_all(body)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        std::fs::create_dir_all(dir.0.join("site/pkg")).unwrap();
        std::fs::write(dir.0.join("site/index.html"), "<p>hi</p>").unwrap();
        std::fs::write(dir.0.join("site/pkg/a b.js"), "x").unwrap();
        std::fs::write(dir.0.join("secret.txt"), "no").unwrap();
        let root = dir.0.join("site").canonicalize().unwrap();
        (dir, root)
    }

    /// A folder removed when dropped (the CLI has no tempfile dependency).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let path = std::env::temp_dir().join(format!(
                    "chainrule-playground-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn the_root_and_escaped_names_resolve_inside_the_folder() {
        let (_dir, root) = site();
        assert_eq!(resolve(&root, "/"), Resolved::File(root.join("index.html")));
        assert_eq!(
            resolve(&root, "/pkg/a%20b.js"),
            Resolved::File(root.join("pkg/a b.js"))
        );
        assert_eq!(resolve(&root, "/nothing.js"), Resolved::Missing);
        // Leading slashes are all stripped: this names a file inside the folder.
        assert_eq!(resolve(&root, "//etc/passwd"), Resolved::Missing);
    }

    #[test]
    fn paths_that_leave_the_folder_are_refused() {
        let (_dir, root) = site();
        for path in [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/pkg/%2E%2E/%2e%2e/secret.txt",
            "/%00",
            "/%zz",
        ] {
            assert_eq!(resolve(&root, path), Resolved::Outside, "{path}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_link_out_of_the_folder_is_refused() {
        let (dir, root) = site();
        std::os::unix::fs::symlink(dir.0.join("secret.txt"), root.join("link.txt")).unwrap();
        assert_eq!(resolve(&root, "/link.txt"), Resolved::Outside);
    }

    #[test]
    fn webassembly_is_served_as_application_wasm() {
        assert_eq!(content_type(Path::new("x.wasm")), "application/wasm");
        assert_eq!(
            content_type(Path::new("app.js")),
            "text/javascript; charset=utf-8"
        );
    }
}
