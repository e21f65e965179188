//! A server that is not up yet, for the tests of a backend's `connect`:
//! a port with nothing listening on it, and a proxy that opens there later
//! and forwards to the real test server, as a server starting late would.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};

/// A local port with nothing listening on it (free when this returns;
/// nothing else on the machine is expected to take it during a test).
pub fn closed_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts listening on `127.0.0.1:port` and forwards every connection to
/// `upstream` (`host:port`): the server "comes up" on `port`. Its threads
/// live until the test process ends.
pub fn start_proxy(port: u16, upstream: String) -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                pipe(c, server);
                pipe(s, client);
            }
        }
    });
    Ok(())
}

/// Copies one direction of a connection until it closes, then closes the
/// other side too.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
    });
}
