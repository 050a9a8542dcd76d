//! One module per scenario of issue 9. Each adds its rows (and raw details) to the report and
//! returns an error if it could not complete.

mod cpu;
mod email;
mod enqueue;
mod events;
mod pickup;
mod processing;
mod ws_capacity;

use crate::{Ctx, Scenario};

pub async fn run(scenario: Scenario, ctx: Ctx) -> anyhow::Result<()> {
    match scenario {
        Scenario::Enqueue => enqueue::run(&ctx).await,
        Scenario::Processing => processing::run(&ctx).await,
        Scenario::Pickup => pickup::run(&ctx).await,
        Scenario::Events => events::run(&ctx).await,
        Scenario::WsCapacity => ws_capacity::run(&ctx).await,
        Scenario::Email => email::run(&ctx).await,
        Scenario::Cpu => cpu::run(&ctx).await,
    }
}
