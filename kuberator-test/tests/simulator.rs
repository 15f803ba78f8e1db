//! The deterministic simulator (`kuberator_test::sim`) on a small derived operator that owns a
//! ConfigMap: the same seed gives the same trace; a correct operator passes every check
//! through crashes, lost answers, conflicts, cut watches and relists; and operators with the
//! mistakes real operators make are caught.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use kuberator::prelude::*;
use kuberator_test::sim::Simulation;
use kuberator_test::sim::Workload;

/// A message, copied into a ConfigMap.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "sim.kuberator.dev", version = "v1", kind = "Echo", namespaced, status = "EchoStatus")]
#[serde(rename_all = "camelCase")]
struct EchoSpec {
    message: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct EchoStatus {
    observed_generation: Option<i64>,
    echoed: Option<String>,
}

impl ObserveGeneration for EchoStatus {
    fn add(&mut self, generation: i64) {
        self.observed_generation = Some(generation);
    }
}

#[derive(Operator, Default)]
#[kuberator(resource = Echo, finalizer = "echoes.sim.kuberator.dev/finalizer", owns = [ConfigMap])]
struct EchoOperator;

impl EchoOperator {
    async fn handle_apply(&self, echo: Arc<Echo>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        let child = ConfigMap {
            metadata: ObjectMeta { name: Some(format!("{}-echo", echo.try_name()?)), ..Default::default() },
            data: Some([("message".to_owned(), echo.spec.message.clone())].into()),
            ..Default::default()
        };
        ctx.apply(&*echo, child).await?;
        ctx.update_status(
            &echo,
            EchoStatus { echoed: Some(echo.spec.message.clone()), ..Default::default() },
        )
        .await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _echo: Arc<Echo>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}

fn echo(index: usize) -> Echo {
    Echo::new(&format!("e{index}"), EchoSpec { message: format!("hello {index}") })
}

/// Each Echo's ConfigMap says its message, at rest.
fn echoed(world: &kuberator_test::sim::World) -> Result<(), String> {
    let maps = world.list::<ConfigMap>();
    for echo in world.list::<Echo>() {
        let name = format!("{}-echo", echo.name_any());
        let map = maps.iter().find(|map| map.name_any() == name).ok_or(format!("{name} is missing"))?;
        let said = map.data.as_ref().and_then(|data| data.get("message"));
        if said != Some(&echo.spec.message) {
            return Err(format!("{name} says {said:?}, not {:?}", echo.spec.message));
        }
    }
    Ok(())
}

fn simulation(name: &str) -> Simulation {
    Simulation::new(name)
        .crd(Echo::crd())
        .process(|client| {
            kuberator::Operators::new().with(EchoOperator).start(client, None::<std::future::Pending<()>>)
        })
        .workload(
            Workload::of("sim", echo)
                .edit(|echo, draw| echo["spec"]["message"] = serde_json::json!(format!("edited {draw}"))),
        )
        .at_rest("each Echo's ConfigMap says its message", echoed)
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let simulation = simulation("the_same_seed_gives_the_same_trace");
    for seed in 1..=6 {
        let first = simulation.run(seed);
        let second = simulation.run(seed);
        assert!(first.trace.len() > 50, "seed {seed}: {}", first.trace.join("\n"));
        let diverged = first.trace.iter().zip(&second.trace).position(|(a, b)| a != b);
        if let Some(at) = diverged.or((first.trace.len() != second.trace.len()).then_some(0)) {
            let from = at.saturating_sub(5);
            panic!(
                "seed {seed} diverged at line {at}:\n{}\n--- against ---\n{}",
                first.trace[from..(at + 3).min(first.trace.len())].join("\n"),
                second.trace[from..(at + 3).min(second.trace.len())].join("\n")
            );
        }
        assert_eq!(first.failure, second.failure);
    }
    assert_ne!(simulation.run(1).trace, simulation.run(2).trace);
}

#[test]
fn a_correct_operator_passes_every_check() {
    let summary = simulation("a_correct_operator_passes_every_check").check(0..20);
    eprintln!("{} seeds, {:.1} seeds/s", summary.seeds, summary.seeds_per_second);
}
