//! SPEC §4 invariant 2 through the real server: concurrent reservations
//! never hold more than is available.

use futures::future::join_all;
use tally_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_reservers_never_hold_more_than_the_balance() {
    let server = TestServer::start().await;
    let mut accounts = server.accounts().await;
    open(&mut accounts, "hot").await;
    grant(&mut accounts, "hot", "g-1", BucketKind::Monthly, 100_000).await;
    grant(&mut accounts, "hot", "g-2", BucketKind::TopUp, 7_000).await;

    // 64 callers over 8 connections, each trying 4 holds of 1.5 credits:
    // 256 attempts for 107 credits, so about 71 fit.
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(server.channel().await);
    }
    let tasks = (0..64).map(|caller| {
        let channel = channels[caller % channels.len()].clone();
        tokio::spawn(async move {
            let mut metering = MeteringServiceClient::new(channel);
            let mut held = Vec::new();
            for attempt in 0..4 {
                let request = reserve_request("hot", &format!("r-{caller}-{attempt}"), 1_500);
                match metering.reserve(request).await {
                    Ok(response) => {
                        held.push(response.into_inner().reservation.unwrap().held_millicredits)
                    }
                    Err(status) => {
                        assert_eq!(reason(&status), "INSUFFICIENT_CREDITS", "{status:?}")
                    }
                }
            }
            held
        })
    });
    let held: Vec<i64> = join_all(tasks)
        .await
        .into_iter()
        .flat_map(|task| task.expect("caller task"))
        .collect();

    let total_held: i64 = held.iter().sum();
    assert_eq!(
        held.len(),
        107_000 / 1_500,
        "every hold that fits is granted, no more"
    );
    let after = balance(&mut accounts, "hot").await;
    assert_eq!(after.held_millicredits, total_held);
    assert!(total_held <= 107_000);
    assert_eq!(after.available_millicredits, 107_000 - total_held);
    assert_eq!(after.open_reservations as usize, held.len());
    let holds = ledger(&mut accounts, "hot")
        .await
        .into_iter()
        .filter(|e| e.kind == LedgerEntryKind::Hold as i32)
        .count();
    assert_eq!(
        holds,
        held.len(),
        "one ledger entry per granted hold, none for refusals"
    );
}
