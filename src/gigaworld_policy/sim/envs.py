"""One entry point for both simulators: task-name resolution and env construction."""

from __future__ import annotations

from gigaworld_policy.sim.common import SimEnv, SimError

ENV_NAMES = ("metaworld", "metaworld-goal", "metaworld-object", "aloha")
# Meta-World env name -> what its state holds (metaworld_env.STATE_VARIANTS): proprio only; with the goal
# position (goal-observable, as its MT benchmarks define it); with the first object's position and the goal
METAWORLD_ENVS = {"metaworld": "proprio", "metaworld-goal": "goal", "metaworld-object": "object"}
ENV_HELP = ("metaworld-goal: Meta-World with the goal position in the state (goal-observable); metaworld-object: "
            "with the first object's position and the goal (a diagnostic: what the images do not give the policy)")
ALOHA_ALIASES = {"TransferCube": "transfer_cube", "Insertion": "insertion",
                 "AlohaTransferCube-v0": "transfer_cube", "AlohaInsertion-v0": "insertion"}


def _check_env_name(env_name: str) -> None:
    if env_name not in ENV_NAMES:
        raise SimError(f"unknown env {env_name!r}; valid envs: {', '.join(ENV_NAMES)}")


def task_sets(env_name: str) -> dict[str, tuple[str, ...]]:
    _check_env_name(env_name)
    if env_name in METAWORLD_ENVS:
        from gigaworld_policy.sim import metaworld_env

        return metaworld_env.task_sets()
    from gigaworld_policy.sim.aloha_env import TASKS

    return {"all": tuple(TASKS)}


def all_tasks(env_name: str) -> tuple[str, ...]:
    _check_env_name(env_name)
    if env_name in METAWORLD_ENVS:
        from gigaworld_policy.sim.metaworld_env import INSTRUCTIONS

        return tuple(INSTRUCTIONS)
    from gigaworld_policy.sim.aloha_env import TASKS

    return tuple(TASKS)


def resolve_tasks(env_name: str, spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Task names from a spec: task names and/or set names (MT10, MT50, ML45-train, ML45-test; ALOHA:
    all), given as a list or a comma-separated string. Order is kept, duplicates dropped."""
    items = [s.strip() for part in ([spec] if isinstance(spec, str) else spec) for s in part.split(",")]
    items = [s for s in items if s]
    if not items:
        raise SimError(f"tasks: no task given for env {env_name!r}")
    sets, tasks = task_sets(env_name), all_tasks(env_name)
    out: list[str] = []
    for item in items:
        name = ALOHA_ALIASES.get(item, item) if env_name == "aloha" else item
        if name in sets:
            out += list(sets[name])
        elif name in tasks:
            out.append(name)
        else:
            raise SimError(f"unknown {env_name} task {item!r}; valid task sets: {', '.join(sets)}; "
                           f"valid tasks: {', '.join(tasks)}")
    return list(dict.fromkeys(out))


def robot_type(env_name: str) -> str:
    """The robot type an env's observations carry (the key a trained policy keeps its cameras under)."""
    _check_env_name(env_name)
    if env_name in METAWORLD_ENVS:
        from gigaworld_policy.sim.metaworld_env import STATE_VARIANTS

        return STATE_VARIANTS[METAWORLD_ENVS[env_name]][0]
    from gigaworld_policy.sim.aloha_env import ROBOT_TYPE as ALOHA_ROBOT_TYPE

    return ALOHA_ROBOT_TYPE


def make_env(env_name: str, task: str, image_size: int = 64, cameras: tuple[str, ...] | None = None,
             max_steps: int | None = None) -> SimEnv:
    """A single-task env. ``cameras`` None = the simulator's default (Meta-World corner2, ALOHA top)."""
    _check_env_name(env_name)
    (task,) = resolve_tasks(env_name, [task])
    if env_name in METAWORLD_ENVS:
        from gigaworld_policy.sim.metaworld_env import DEFAULT_CAMERAS, MAX_EPISODE_STEPS, MetaWorldEnv

        return MetaWorldEnv(task, image_size=image_size, cameras=tuple(cameras or DEFAULT_CAMERAS),
                            max_steps=max_steps or MAX_EPISODE_STEPS, state=METAWORLD_ENVS[env_name])
    from gigaworld_policy.sim.aloha_env import DEFAULT_CAMERAS as ALOHA_CAMERAS
    from gigaworld_policy.sim.aloha_env import AlohaEnv

    return AlohaEnv(task, image_size=image_size, cameras=tuple(cameras or ALOHA_CAMERAS), max_steps=max_steps)
