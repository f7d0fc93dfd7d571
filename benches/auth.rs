//! What access control costs on this machine.
//!
//! `cargo bench --bench auth` prints `name=value` lines:
//!
//! * `login_pbkdf2_ms`: one password check at the default cost
//!   (`auth::password::ITERATIONS_DEFAULT`), what a login costs the worker;
//! * `token_sign_us`, `token_verify_us`: making and checking a token's MAC;
//! * `check_claims_ns`: the per-request check of a bound token (expiry
//!   and epoch), what every request pays while auth is on;
//! * `permits_ns`: one coverage check of a user holding 8 roles of 8
//!   permissions each.
//!
//! Timings are the best of several rounds.

use std::hint::black_box;
use std::time::Instant;

use ember::auth::password::{ITERATIONS_DEFAULT, SALT_BYTES, StoredPassword};
use ember::auth::{AuthState, Claims, PermKind, Permission, Right, Span};

fn best<T>(rounds: usize, mut run: impl FnMut() -> T) -> f64 {
    (0..rounds)
        .map(|_| {
            let started = Instant::now();
            black_box(run());
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let stored = StoredPassword::derive(b"correct horse", [7; SALT_BYTES], ITERATIONS_DEFAULT);
    let login = best(5, || stored.verify(b"correct horse"));
    println!("login_pbkdf2_iterations={ITERATIONS_DEFAULT}");
    println!("login_pbkdf2_ms={:.1}", login * 1e3);

    let mut auth = AuthState::default();
    auth.add_user("root", None).unwrap();
    auth.grant_role("root", "root").unwrap();
    auth.add_user("u", None).unwrap();
    for r in 0..8 {
        let role = format!("r{r}");
        auth.add_role(&role).unwrap();
        for p in 0..8 {
            let key = format!("/app/{r}/{p}/").into_bytes();
            let range_end = ember::proto::prefix_range_end(&key);
            let permission = Permission { kind: PermKind::ReadWrite, key, range_end };
            auth.grant_permission(&role, permission).unwrap();
        }
        auth.grant_role("u", &role).unwrap();
    }
    auth.enable(&[3; 32]).unwrap();
    let token = auth.issue_token("u", 1_000, 300).unwrap();
    let claims = auth.check_token(&token, 2_000).unwrap();
    const N: usize = 10_000;
    let sign =
        best(5, || (0..N).map(|_| auth.issue_token("u", 1_000, 300).unwrap().len()).sum::<usize>());
    println!("token_sign_us={:.2}", sign * 1e6 / N as f64);
    let verify =
        best(5, || (0..N).filter(|_| Claims::verify(&token, &auth.token_key).is_ok()).count());
    println!("token_verify_us={:.2}", verify * 1e6 / N as f64);
    let check = best(5, || (0..N).filter(|_| auth.check_claims(&claims, 2_000).is_ok()).count());
    println!("check_claims_ns={:.0}", check * 1e9 / N as f64);
    let span = Span::of(b"/app/7/7/key", b"");
    let permits = best(5, || (0..N).filter(|_| auth.permits("u", Right::Write, &span)).count());
    println!("permits_ns={:.0}", permits * 1e9 / N as f64);
}
