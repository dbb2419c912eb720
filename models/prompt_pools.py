"""The prompts of the prompt-pool methods, chosen or composed per sample from the query
(``models.prompts``: the frozen backbone's pre-logits features of the input, q).

- :class:`L2PPool` (Wang et al., CVPR 2022): M prompts of L tokens, each with a key k_m. The N
  keys most cosine-similar to q choose the prompts, concatenated (N L tokens) and inserted once
  before the first block (shallow prompt tuning). Its auxiliary loss is L2P's surrogate
  -lambda (1/B) sum_b sum_{m chosen for b} cos(q_b, k_m), which pulls the chosen keys to the
  queries. The whole pool is shared by all tasks and trained on each.
- :class:`GeneralPrefix` and :class:`ExpertPrefixes` (DualPrompt, Wang et al., ECCV 2022): a
  general prefix (L_g key and L_g value entries per G-layer) shared by all tasks, and per task an
  expert prefix (L_e entries per E-layer) with a key k_t. In training a sample uses its own
  task's expert, whose key is pulled to the queries by lambda (1 - cos(q, k_t)); given a task,
  that task's; without a task id, the expert whose key is the most cosine-similar to q.
- :class:`CodaPrefixes` (CODA-Prompt, Smith et al., CVPR 2023): per prefix layer, components
  (P_m, K_m, A_m) added per task (C per task) and frozen with their task; the prompt is
  sum_m alpha_m P_m with alpha_m = cos(q * A_m, K_m) (no hard choice, end to end), its first half
  the key prefix and its second half the value prefix. A new task's components start orthogonal
  to the earlier ones (Gram-Schmidt, while they fit in the dimension).

A module that owns prompts for several layers hands each layer a :class:`LayerPrefix` view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.prompts import PromptQuery
from models.tasks import TaskModule, TaskTensor


def uniform(*shape: int, device="cpu") -> nn.Parameter:
    """A parameter drawn from U(-1, 1), the methods' default prompt and key init."""
    return nn.Parameter(torch.empty(*shape).uniform_(-1.0, 1.0).to(device))


class LayerPrefix(nn.Module):
    """Layer ``layer``'s prefix (keys, values) from an owner that computes every layer's for the
    batch (``owner.layer_prefix(layer)``); holds no parameters (the owner is a plain reference)."""

    def __init__(self, owner: nn.Module, layer: int):
        super().__init__()
        self.__dict__["owner"] = owner
        self.layer = layer

    def prefix(self, batch: int):
        return self.__dict__["owner"].layer_prefix(self.layer)


class L2PPool(nn.Module):
    """L2P's prompt pool: ``size`` prompts of ``length`` tokens with keys; ``top_n`` chosen per
    sample (module docstring). A prompt source for ``models.prompts.attach_shallow_prompts``."""

    def __init__(self, size: int, length: int, top_n: int, dim: int, pull_weight: float,
                 query: PromptQuery):
        super().__init__()
        if not 1 <= top_n <= size:
            raise ValueError(f"l2p: top_n must be in 1..{size} (the pool size), got {top_n}")
        self.pool = uniform(size, length, dim)
        self.keys = uniform(size, dim)
        self.top_n, self.pull_weight = top_n, pull_weight
        self.__dict__["query"] = query
        query.listeners.append(self)
        self.inserted, self.outputs = 0, None
        self._chosen: torch.Tensor | None = None
        self._pull: torch.Tensor | None = None

    def choose(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices of the top_n keys per sample (B, N), their cosine similarities (B, N))."""
        sim = F.normalize(q.float(), dim=1) @ F.normalize(self.keys, dim=1).T
        top = sim.topk(self.top_n, dim=1)
        return top.indices, top.values

    def on_query(self, q: torch.Tensor) -> None:
        chosen, sim = self.choose(q)
        self._chosen = chosen
        if self.training:
            self._pull = sim.sum(dim=1).mean()

    def prompts(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.__dict__["query"].computing or self._chosen is None:
            return None
        return self.pool[self._chosen].flatten(1, 2)  # (B, N L, d)

    def pop_auxiliary_loss(self) -> torch.Tensor | None:
        """-lambda (1/B) sum of the chosen keys' similarities (``models.losses``)."""
        pull, self._pull = self._pull, None
        return None if pull is None else -self.pull_weight * pull


class GeneralPrefix(nn.Module):
    """DualPrompt's general prefix: ``length`` key and value entries for each of ``n_layers``
    layers, shared by all tasks."""

    def __init__(self, n_layers: int, length: int, dim: int, query: PromptQuery):
        super().__init__()
        self.prompts = uniform(n_layers, 2, length, dim)
        self.__dict__["query"] = query

    def layer_prefix(self, layer: int):
        if self.__dict__["query"].computing:
            return None
        return self.prompts[layer, 0], self.prompts[layer, 1]


class ExpertPrefixes(TaskModule):
    """DualPrompt's expert prefixes: per task ``length`` key and value entries for each of
    ``n_layers`` layers and a key (module docstring). The task set by ``set_task`` serves; set
    to None (no task id), each sample gets the expert its query chooses."""

    infers_task = True

    def __init__(self, n_layers: int, length: int, dim: int, match_weight: float,
                 query: PromptQuery):
        super().__init__()
        self.shape = (n_layers, 2, length, dim)
        self.match_weight = match_weight
        self.prompts = nn.ParameterDict()
        self.keys = nn.ParameterDict()
        self.__dict__["query"] = query
        query.listeners.append(self)
        # the prefixes of this batch, (n_layers, 2, L, d) or (B, n_layers, 2, L, d): a plain
        # attribute (a task's Parameter assigned to a module attribute would be registered)
        self.__dict__["_chosen"] = None
        self._match: torch.Tensor | None = None

    def add_task(self, task: int, device="cpu") -> None:
        self.prompts[f"task_{task}"] = uniform(*self.shape, device=device)
        self.keys[f"task_{task}"] = uniform(self.shape[-1], device=device)

    def has_task(self, task: int) -> bool:
        return f"task_{task}" in self.prompts

    def finish_task(self, task: int) -> None:
        self.prompts[f"task_{task}"].requires_grad_(False)
        self.keys[f"task_{task}"].requires_grad_(False)

    def export_task(self, task: int) -> dict[str, TaskTensor]:
        return {f"prompts.task_{task}": TaskTensor(self.prompts[f"task_{task}"], "prompt"),
                f"keys.task_{task}": TaskTensor(self.keys[f"task_{task}"], "key")}

    def import_task(self, task: int, state: dict[str, torch.Tensor]) -> None:
        self.prompts[f"task_{task}"] = nn.Parameter(state[f"prompts.task_{task}"].clone(),
                                                    requires_grad=False)
        self.keys[f"task_{task}"] = nn.Parameter(state[f"keys.task_{task}"].clone(),
                                                 requires_grad=False)

    def task_parameters(self, task: int) -> list[nn.Parameter]:
        return [self.prompts[f"task_{task}"], self.keys[f"task_{task}"]]

    def tasks(self) -> list[int]:
        return sorted(int(k.removeprefix("task_")) for k in self.prompts)

    def infer_tasks(self, q: torch.Tensor) -> torch.Tensor:
        """Per sample, the task whose key is the most cosine-similar to the query."""
        tasks = self.tasks()
        keys = torch.stack([self.keys[f"task_{t}"] for t in tasks])
        sim = F.normalize(q.float(), dim=1) @ F.normalize(keys, dim=1).T
        return torch.tensor(tasks, device=q.device)[sim.argmax(dim=1)]

    def on_query(self, q: torch.Tensor) -> None:
        if self.task is None and self.prompts:
            chosen = self.infer_tasks(q)
            self.__dict__["_chosen"] = torch.stack([self.prompts[f"task_{t}"]
                                                    for t in chosen.tolist()])
            return
        if not self.has_task(self.task):
            self.__dict__["_chosen"] = None
            return
        self.__dict__["_chosen"] = self.prompts[f"task_{self.task}"]
        if self.training:
            key = self.keys[f"task_{self.task}"]
            cos = F.normalize(q.float(), dim=1) @ F.normalize(key, dim=0)
            self._match = self.match_weight * (1 - cos).mean()

    def layer_prefix(self, layer: int):
        if self.__dict__["query"].computing or self._chosen is None:
            return None
        return self._chosen[..., layer, 0, :, :], self._chosen[..., layer, 1, :, :]

    def pop_auxiliary_loss(self) -> torch.Tensor | None:
        """lambda (1 - cos(q, k_t)) of the last training forward (``models.losses``)."""
        match, self._match = self._match, None
        return match


def orthogonal_rows(earlier: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` random unit rows orthogonal to the rows of ``earlier`` (m, D) and to each other
    (Gram-Schmidt through a QR factorization), or random unit rows when m + n > D."""
    m, D = earlier.shape
    fresh = torch.randn(n, D)
    if m + n > D:
        return F.normalize(fresh, dim=1)
    q, _ = torch.linalg.qr(torch.cat([earlier, fresh]).T)  # (D, m + n), orthonormal columns
    return q[:, m:].T.contiguous()


class CodaPrefixes(TaskModule):
    """CODA-Prompt's components for ``n_layers`` prefix layers: per task ``per_task`` components,
    each a prompt of ``length`` entries (half keys, half values), a key and an attention vector
    per layer (module docstring). Features do not depend on the task: every forward composes all
    components added so far; ``set_task`` is ignored."""

    conditions_features = False

    def __init__(self, n_layers: int, per_task: int, length: int, dim: int,
                 query: PromptQuery):
        super().__init__()
        if length % 2:
            raise ValueError(f"coda-prompt: the prompt length must be even (half keys, half "
                             f"values), got {length}")
        self.n_layers, self.per_task, self.length, self.dim = n_layers, per_task, length, dim
        self.components = nn.ModuleDict()
        self.__dict__["query"] = query
        query.listeners.append(self)
        self._prompts: torch.Tensor | None = None  # (n_layers, B, length, d) of this batch

    def stacked(self, name: str) -> torch.Tensor:
        """Every task's ``name`` tensor, concatenated over components: (n_layers, M, ...)."""
        return torch.cat([getattr(c, name) for c in self.components.values()], dim=1)

    def add_task(self, task: int, device="cpu") -> None:
        L, C, n, d = self.n_layers, self.per_task, self.length, self.dim
        part = nn.Module()
        for name, width in (("prompt", n * d), ("key", d), ("attention", d)):
            earlier = (self.stacked(name).detach().cpu().reshape(L, -1, width)
                       if len(self.components) else torch.zeros(L, 0, width))
            rows = torch.stack([orthogonal_rows(earlier[layer], C) for layer in range(L)])
            shape = (L, C, n, d) if name == "prompt" else (L, C, d)
            setattr(part, name, nn.Parameter(rows.reshape(shape).to(device)))
        self.components[f"task_{task}"] = part

    def has_task(self, task: int) -> bool:
        return f"task_{task}" in self.components

    def finish_task(self, task: int) -> None:
        self.components[f"task_{task}"].requires_grad_(False)

    def export_task(self, task: int) -> dict[str, TaskTensor]:
        part = self.components[f"task_{task}"]
        return {f"components.task_{task}.{k}": TaskTensor(v, "prompt")
                for k, v in part.state_dict().items()}

    def import_task(self, task: int, state: dict[str, torch.Tensor]) -> None:
        part = nn.Module()
        for name in ("prompt", "key", "attention"):
            setattr(part, name, nn.Parameter(state[f"components.task_{task}.{name}"].clone(),
                                             requires_grad=False))
        self.components[f"task_{task}"] = part

    def task_parameters(self, task: int) -> list[nn.Parameter]:
        return list(self.components[f"task_{task}"].parameters())

    def weights(self, q: torch.Tensor) -> torch.Tensor:
        """alpha (n_layers, B, M): cos(q * A_m, K_m) per layer and component."""
        qa = F.normalize(q.float()[None, :, None, :] * self.stacked("attention")[:, None],
                         dim=-1)  # (L, B, M, d)
        return (qa * F.normalize(self.stacked("key"), dim=-1)[:, None]).sum(-1)

    def on_query(self, q: torch.Tensor) -> None:
        if not len(self.components):
            self._prompts = None
            return
        self._prompts = torch.einsum("lbm,lmnd->lbnd", self.weights(q), self.stacked("prompt"))

    def layer_prefix(self, layer: int):
        if self.__dict__["query"].computing or self._prompts is None:
            return None
        half = self.length // 2
        p = self._prompts[layer]
        return p[:, :half], p[:, half:]
