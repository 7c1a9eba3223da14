"""A flow_matching user's training + sampling script, written once; ``run("flow_matching")``
and ``run("fastflow")`` differ only in the imports (the migration DESIGN.md promises)."""
import importlib

import torch


def run(lib: str, iters: int = 30):
    path_mod = importlib.import_module(f"{lib}.path")
    sched_mod = importlib.import_module(f"{lib}.path.scheduler")
    solver_mod = importlib.import_module(f"{lib}.solver")
    utils_mod = importlib.import_module(f"{lib}.utils")
    loss_mod = importlib.import_module(f"{lib}.loss")

    torch.manual_seed(0)
    # -- continuous: CondOT path, MSE on dx_t, Euler sampling
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))

    class Wrapped(utils_mod.ModelWrapper):
        def forward(self, x, t, **extras):
            return self.model(torch.cat([x, t.expand(x.shape[0])[:, None]], 1))

    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    path = path_mod.AffineProbPath(scheduler=sched_mod.CondOTScheduler())
    losses = []
    for _ in range(iters):
        x_1 = torch.randn(64, 2) * 0.5 + 2
        x_0 = torch.randn(64, 2)
        t = torch.rand(64)
        s = path.sample(x_0=x_0, x_1=x_1, t=t)
        loss = torch.pow(net(torch.cat([s.x_t, s.t[:, None]], 1)) - s.dx_t, 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    solver = solver_mod.ODESolver(velocity_model=Wrapped(net))
    samples = solver.sample(x_init=torch.randn(256, 2), step_size=0.05, method="midpoint")

    # -- discrete: mixture path, generalized KL, Euler jump sampler (probabilities, as flow_matching)
    V = 8
    dnet = torch.nn.Sequential(torch.nn.Embedding(V, 16), torch.nn.Flatten(), torch.nn.Linear(32, 2 * V))
    dpath = path_mod.MixtureDiscreteProbPath(scheduler=sched_mod.PolynomialConvexScheduler(n=2.0))
    kl = loss_mod.MixturePathGeneralizedKL(path=dpath)
    dopt = torch.optim.Adam(dnet.parameters(), lr=1e-2)
    for _ in range(iters):
        x_1 = torch.stack([torch.randint(0, 3, (64,)), torch.randint(5, 8, (64,))], 1)
        x_0 = torch.randint(0, V, (64, 2))
        t = torch.rand(64) * (1 - 1e-3)
        d = dpath.sample(x_0=x_0, x_1=x_1, t=t)
        dl = kl(dnet(d.x_t).view(64, 2, V), x_1, d.x_t, t)
        dopt.zero_grad()
        dl.backward()
        dopt.step()

    class DWrapped(utils_mod.ModelWrapper):
        def forward(self, x, t, **extras):
            return torch.softmax(self.model(x).view(x.shape[0], 2, V), -1)

    dsolver = solver_mod.MixtureDiscreteEulerSolver(model=DWrapped(dnet), path=dpath, vocabulary_size=V)
    tokens = dsolver.sample(x_init=torch.randint(0, V, (2000, 2)), step_size=0.1)
    return losses, samples, tokens, float(dl.detach())
