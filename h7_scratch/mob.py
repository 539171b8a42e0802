import sys, time, json, os
sys.path.insert(0, os.getcwd())
import numpy as np
from multiprocessing import Pool
import logging; logging.disable(logging.WARNING)

def job(args):
    label, kw, observe, seed, budget, metric = args
    from backends.blackbox import load_blackbox, NearestNeighbourSurrogate
    from backends.simulated import SimulatedBackend
    from hpo_core.schedulers.asha import ASHA
    from hpo_core.schedulers.mobster import _PeriodicRefitGPSearcher
    from hpo_core.stopping import StoppingCriterion
    from hpo_core.tuner import Tuner
    bb = load_blackbox("lcbench", task="blood-transfusion-service-center")
    mode = "min" if "entropy" in metric else "max"
    t = time.time()
    if label == "asha":
        s = "random"
    else:
        s = _PeriodicRefitGPSearcher(bb.config_space, seed=seed, resource_attr="epoch", max_resource=51, min_resource=1, refit_every=10, num_candidates=200, **kw)
        if observe == "rungs": s.uses_intermediate_results = False
    sched = ASHA(bb.config_space, metric, mode, seed, max_t=51, searcher=s)
    tuner = Tuner(sched, SimulatedBackend(bb, seed=seed, objectives=[metric]), StoppingCriterion(max_time=budget), n_workers=4)
    res = tuner.run()
    nn = NearestNeighbourSurrogate(bb)
    rows = [nn.neighbours(tr.config)[0] for tr in tuner.trials.values()]
    return label, seed, time.time() - t, len(tuner.trials), len(set(rows)), res.best_value

if __name__ == "__main__":
    variants = json.loads(sys.argv[1]); seeds = int(sys.argv[2]); budget = float(sys.argv[3]); metric = sys.argv[4]
    jobs = [(l, kw, obs, s, budget, metric) for l, kw, obs in variants for s in range(seeds)]
    out = []
    with Pool(16) as pool:
        for r in pool.imap_unordered(job, jobs):
            out.append(r); print(r, flush=True)
    agg = {}
    for l, s, sec, n, u, b in out:
        agg.setdefault(l, []).append((sec, n, u, b))
    for l, v in agg.items():
        a = np.array(v)
        print(f"{l:30s} sec={a[:,0].mean():6.1f} trials={a[:,1].mean():6.0f} uniq={a[:,2].mean():6.0f} best mean={a[:,3].mean():.4f} vals={np.round(a[:,3],4).tolist()}")
