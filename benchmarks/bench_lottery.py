"""Lottery tickets on LeNet-300-100 (MNIST): the rewound ticket vs a random re-initialisation
at the same sparsity, round by round (Frankle & Carbin 2019, Figure 3's experiment).

    python benchmarks/bench_lottery.py [--quick] [--rounds 5] [--rate 0.5] [--epochs 4]

Iterative magnitude pruning (unstructured, layer-wise; the output layer at half the rate)
prunes ``rate`` of the surviving weights per round and rewinds the survivors to their
initial values (``--rewind-step`` > 0 rewinds to that training step instead). The control
keeps each round's masks but draws fresh initial weights, and trains the same way.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfscalpel import lottery, models  # noqa: E402
from tfscalpel_jobs.main import load_data  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6k images, 2 rounds, 1 epoch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.5, help="fraction pruned per round")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs per round")
    parser.add_argument("--rewind-step", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.epochs = 2, 1
    started = time.time()
    (x, y), (xt, yt) = load_data(args.quick)

    def train(model, callbacks):
        keras.utils.set_random_seed(args.seed)  # same data order for ticket and control
        models.compile_classifier(model, keras.optimizers.Adam(1.2e-3))  # Frankle & Carbin
        model.fit(x, y, batch_size=128, epochs=args.epochs, verbose=0, callbacks=callbacks)

    def error(model):
        return 100.0 * float(np.mean(np.argmax(model.predict(xt, batch_size=1000, verbose=0), 1) != yt))

    controls = {}

    def evaluate(model):
        ticket = error(model)
        rnd = len(controls)
        if rnd > 0:  # the control: this round's masks, fresh random weights, same training
            control = lottery.copy_pruned(model)
            lottery.reinitialize(control, seed=1000 + rnd)
            train(control, [])
            controls[rnd] = error(control)
        else:
            controls[rnd] = ticket
        print(f"  round {rnd}: sparsity {lottery.weight_sparsity(model):.1%}  ticket error "
              f"{ticket:.2f} %  control error {controls[rnd]:.2f} %  ({time.time() - started:.0f} s)",
              flush=True)
        return ticket

    keras.utils.set_random_seed(args.seed)
    result = lottery.iterative_magnitude_pruning(
        models.lenet_300_100(), train, rounds=args.rounds, rate=args.rate,
        rewind_step=args.rewind_step, per_layer_rate={"fc3": args.rate / 2}, evaluate=evaluate)

    print()
    print(f"LeNet-300-100 lottery tickets: {args.rate:.0%} of survivors pruned per round "
          f"(fc3 {args.rate / 2:.0%}), {args.epochs} epochs per round, rewind to step "
          f"{args.rewind_step}, {len(x):,} training images ({time.time() - started:.0f} s)")
    head = f"{'round':>5}{'weights left':>14}{'ticket error':>14}{'random re-init':>16}"
    print(head)
    print("-" * len(head))
    for r in result.rounds:
        print(f"{r.round:>5}{1 - r.sparsity:>14.1%}{r.metric:>13.2f}%{controls[r.round]:>15.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
