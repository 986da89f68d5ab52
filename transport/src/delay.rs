//! A delay line for a link's frames: benchmarks' stand-in for a WAN's latency
//! (`--link-delay-ms`), the same on the hosts' links and the designer's.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// The frames of `frames` (or anything else sent through a channel), each `delay` after it
/// was queued there, in order. Call it inside a tokio runtime. A task stamps each frame as it
/// is queued (so none waits behind the delay of the one before); a thread holds it until
/// then, since tokio's timer rounds up to whole milliseconds and a 1 ms delay would be about
/// 1.5.
pub fn delay_line<T: Send + 'static>(
    mut frames: mpsc::Receiver<T>,
    delay: Duration,
) -> std::io::Result<mpsc::Receiver<T>> {
    let depth = frames.max_capacity();
    let (stamped_tx, mut stamped) = mpsc::channel::<(Instant, T)>(depth);
    let (due_tx, due) = mpsc::channel(depth);
    std::thread::Builder::new()
        .name("link-delay".into())
        .spawn(move || {
            // How late frames leave, beyond `delay` (a busy machine wakes sleepers late).
            let (mut frames, mut late, mut latest) = (0u64, Duration::ZERO, Duration::ZERO);
            while let Some((at, frame)) = stamped.blocking_recv() {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                let lateness = at.elapsed();
                (frames, late, latest) = (frames + 1, late + lateness, latest.max(lateness));
                if due_tx.blocking_send(frame).is_err() {
                    break;
                }
            }
            tracing::debug!(
                frames,
                delay_us = delay.as_micros(),
                mean_late_us = late.as_micros() / u128::from(frames.max(1)),
                max_late_us = latest.as_micros(),
                "link delay line done"
            );
        })?;
    tokio::spawn(async move {
        while let Some(frame) = frames.recv().await {
            if stamped_tx
                .send((Instant::now() + delay, frame))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Ok(due)
}
