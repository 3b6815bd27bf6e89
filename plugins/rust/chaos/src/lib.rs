//! A plugin that misbehaves on request, so tests can prove the sandbox holds: joining room `chaos:loop`
//! spins forever, `chaos:oom` allocates until the memory cap stops it, `chaos:stack` recurses until the
//! stack cap stops it, `chaos:trap` panics, `chaos:churn` keeps 70 MiB (so the host throws the instance
//! away after the call), `chaos:network` tries to open TCP and UDP sockets and refuses the join with
//! what the sandbox answered (or allows it, should a socket open), and `chaos:refuse` is an ordinary
//! refusal. Events named `loop`, `oom`, `stack`, `trap` and `churn` do the same in `transform_event`;
//! any other room or event passes. The setting `label` is echoed in refusals, so a test can tell which
//! version answered; the setting `start-spins` makes every instance spin that many iterations while it
//! starts (a slow start function).

use std::hint::black_box;

use ioplex_guest::{ClientEvent, EventAction, JoinRequest, Plugin, host};

/// Recurses without end on the wasm stack (no locals in linear memory, so the wasm stack cap, not the
/// shadow stack, is what stops it); the mixed operations keep the compiler from making it a loop.
fn deeper(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    deeper(black_box(depth + 1)).rotate_left(1) ^ depth
}

fn misbehave(what: &str) -> Result<(), String> {
    match what {
        "churn" => {
            std::mem::forget(black_box(vec![1u8; 70 << 20]));
            Ok(())
        }
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                black_box(&hoard);
            }
        }
        "stack" => {
            black_box(deeper(0));
            Ok(())
        }
        "trap" => panic!("chaos plugin asked to trap"),
        "network" => {
            let tcp = std::net::TcpStream::connect("127.0.0.1:6379").map(drop);
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").map(drop);
            match (tcp, udp) {
                (Err(tcp), Err(udp)) => Err(format!("network refused: tcp: {tcp}; udp: {udp}")),
                _ => Ok(()),
            }
        }
        "refuse" => Err(format!(
            "refused by chaos {}",
            host::setting("label").unwrap_or_default()
        )),
        _ => Ok(()),
    }
}

struct Chaos;

impl Plugin for Chaos {
    fn authorize_join(request: JoinRequest) -> Result<(), String> {
        match request.room.strip_prefix("chaos:") {
            Some(what) => misbehave(what),
            None => Ok(()),
        }
    }

    fn transform_event(event: ClientEvent) -> Result<EventAction, String> {
        misbehave(&event.body.name).map(|()| EventAction::Pass)
    }
}

ioplex_guest::export!(Chaos: authorize_join, transform_event);
