"""Usage: python3 tools/pytorch_mnist_example.py MNIST_DIR [SEED]

PyTorch's MNIST example (pytorch/examples mnist/main.py) for 3 epochs: same network,
Adadelta lr 1.0, StepLR(1, 0.7), batch 64 shuffled, test batch 1000; prints test
accuracy after each epoch. Data read from the IDX files as tools/bench_pytorch.py does."""
import sys, time
from pathlib import Path

import torch
import torch.nn.functional as F
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pytorch as b
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
torch.manual_seed(seed)
torch.set_num_threads(2)
folder = Path(sys.argv[1])
(xtr, ytr), (xte, yte) = b.mnist(folder, "train"), b.mnist(folder, "t10k")
norm = lambda x: ((x - 0.1307) / 0.3081).reshape(-1, 1, 28, 28)
xtr, xte = norm(xtr), norm(xte)
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3, 1); self.conv2 = torch.nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = torch.nn.Dropout(0.25); self.dropout2 = torch.nn.Dropout(0.5)
        self.fc1 = torch.nn.Linear(9216, 128); self.fc2 = torch.nn.Linear(128, 10)
    def forward(self, x):
        x = F.relu(self.conv1(x)); x = F.relu(self.conv2(x)); x = F.max_pool2d(x, 2)
        x = self.dropout1(x); x = torch.flatten(x, 1); x = F.relu(self.fc1(x))
        x = self.dropout2(x); return F.log_softmax(self.fc2(x), dim=1)
model = Net()
opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
for epoch in range(1, 4):
    model.train(); start = time.time()
    perm = torch.randperm(len(xtr))
    for i in range(0, len(xtr), 64):
        idx = perm[i:i + 64]
        opt.zero_grad(); F.nll_loss(model(xtr[idx]), ytr[idx]).backward(); opt.step()
    sched.step(); model.eval(); correct = 0; loss = 0.0
    with torch.no_grad():
        for i in range(0, len(xte), 1000):
            out = model(xte[i:i + 1000]); loss += F.nll_loss(out, yte[i:i + 1000], reduction="sum").item()
            correct += (out.argmax(1) == yte[i:i + 1000]).sum().item()
    print(f"seed {seed} epoch {epoch}: test loss {loss / len(xte):.4f}, accuracy {correct / len(xte):.4f}, {time.time() - start:.0f} s", flush=True)
