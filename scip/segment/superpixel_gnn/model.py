"""The graph network: message passing over the superpixel graph in plain PyTorch.

No graph library (torch-geometric, DGL) is needed: messages are gathered
with tensor indexing and summed into their target nodes with
:meth:`torch.Tensor.index_add_`.

One layer, for node states ``h`` (N, H), directed edges ``s -> t`` (both
directions of every undirected edge) with features ``e``::

    m_st = ReLU(A h_s + B h_t + C e_st)         # (E, H)
    a_t  = mean over incoming s of m_st          # (N, H)
    h_t  = LayerNorm(h_t + MLP_upd([h_t, a_t]))

``A h`` and ``B h`` are computed once per node before gathering, so the
per-edge work is a gather, an add and a ReLU (``E x H``); the dense layers
run on nodes only. At inference edges and node updates are processed in
chunks, so the memory of a layer is about ``4 x N x H`` floats plus one
chunk, whatever the graph size. A linear
encoder maps the standardized node features to ``H``, a linear head maps
the final state to one foreground logit per node.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["Architecture", "GraphNet", "MessagePassing", "EDGE_CHUNK"]

#: Directed edges (and nodes, for the node update) per chunk at inference.
EDGE_CHUNK = 65_536


@dataclass(frozen=True)
class Architecture:
    """Shape of a :class:`GraphNet`.

    Attributes
    ----------
    node_features, edge_features : int
        Input feature counts.
    hidden : int
        Node state width.
    layers : int
        Message passing layers (each widens the receptive field by one
        ring of neighbouring superpixels).
    """

    node_features: int
    edge_features: int
    hidden: int = 32
    layers: int = 4

    def to_dict(self) -> dict:
        """Plain types, for the model file."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Architecture":
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: int(v) for k, v in data.items()})


class MessagePassing(nn.Module):
    """One message passing layer (see the module docstring)."""

    def __init__(self, hidden: int, edge_features: int):
        super().__init__()
        self.source = nn.Linear(hidden, hidden)
        self.target = nn.Linear(hidden, hidden, bias=False)
        self.edge = nn.Linear(edge_features, hidden, bias=False)
        self.update = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, edge_attr: torch.Tensor,
                inv_degree: torch.Tensor) -> torch.Tensor:
        hs, ht = self.source(h), self.target(h)
        agg = torch.zeros_like(h)
        chunk = src.shape[0] if self.training else EDGE_CHUNK
        for start in range(0, src.shape[0], chunk):
            s, t = src[start:start + chunk], dst[start:start + chunk]
            m = torch.relu(hs[s] + ht[t] + self.edge(edge_attr[start:start + chunk]))
            agg = agg.index_add(0, t, m) if self.training else agg.index_add_(0, t, m)
        del hs, ht
        agg.mul_(inv_degree[:, None])
        if self.training:
            return self.norm(h + self.update(torch.cat([h, agg], dim=1)))
        # Inference: the node update in chunks, written over agg (no autograd), so that its
        # temporaries are chunk-sized.
        for start in range(0, h.shape[0], EDGE_CHUNK):
            sl = slice(start, start + EDGE_CHUNK)
            agg[sl] = self.norm(h[sl] + self.update(torch.cat([h[sl], agg[sl]], dim=1)))
        return agg


class GraphNet(nn.Module):
    """Node classifier: encoder, :class:`MessagePassing` layers, one logit per node."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        self.encode = nn.Sequential(nn.Linear(arch.node_features, arch.hidden), nn.ReLU(),
                                    nn.Linear(arch.hidden, arch.hidden))
        self.layers = nn.ModuleList(MessagePassing(arch.hidden, arch.edge_features) for _ in range(arch.layers))
        self.head = nn.Linear(arch.hidden, 1)

    def forward(self, nodes: torch.Tensor, edges: torch.Tensor, edge_features: torch.Tensor) -> torch.Tensor:
        """Foreground logits of the nodes.

        Parameters
        ----------
        nodes : Tensor, shape (N, F)
            Standardized node features.
        edges : Tensor of int64, shape (E, 2)
            Undirected edges, each once.
        edge_features : Tensor, shape (E, Fe)
            Standardized edge features.

        Returns
        -------
        Tensor, shape (N,)
        """
        src = torch.cat([edges[:, 0], edges[:, 1]])
        dst = torch.cat([edges[:, 1], edges[:, 0]])
        attr = torch.cat([edge_features, edge_features])
        degree = torch.bincount(dst, minlength=nodes.shape[0]).clamp(min=1).to(nodes.dtype)
        h = self.encode(nodes)
        for layer in self.layers:
            h = layer(h, src, dst, attr, 1.0 / degree)
        return self.head(h).squeeze(-1)
