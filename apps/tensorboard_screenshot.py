"""Screenshot of TensorBoard's image dashboard for a run (the pictures kvae.training.callbacks.TensorBoardImages
writes each epoch), taken by headless Chromium: the picture in docs/cli.md.

    python apps/tensorboard_screenshot.py RUN_DIR [--out docs/images/tensorboard_images.png]
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from explorer_screenshot import chromium_driver, wait_for  # noqa: E402


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--out", default=os.path.join("docs", "images", "tensorboard_images.png"))
    args = p.parse_args()
    port = _free_port()
    board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", os.path.join(args.run_dir, "logs"),
                              "--host", "127.0.0.1", "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            driver = chromium_driver(os.path.join(tmp, "profile"), width=1400, height=1000)
            try:
                driver.get(f"http://127.0.0.1:{port}/?darkMode=false#images")
                time.sleep(15)  # the image cards load their PNGs after the page
                os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
                driver.save_screenshot(args.out)
                print(f"wrote {args.out}")
            finally:
                driver.quit()
    finally:
        board.terminate()
        board.wait(timeout=30)


if __name__ == "__main__":
    main()
