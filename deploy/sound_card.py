"""
sound_card.py -- phase 5 live: a sound card in, a sound card out, for onnx_runner.py --live.

numpy and the standard library only (sounddevice when a card is opened): onnx_export.py copies
it beside the runner, which imports it.
"""
import threading
import time

import numpy as np

# With --live the backing is the band itself, heard through an input device, and the
# solo goes to an output device. Two threads share the work. The sound card's callback
# (PortAudio's thread, through sounddevice) must return within one block, every block,
# or the card plays a gap: so it only copies samples, into one ring buffer and out of
# another, and never waits on the model. The model's thread takes each complete chunk
# from the input ring, runs the codec and the two steps, and appends the solo audio it
# finishes to the output ring. When the model falls behind, the callback finds the
# output ring short and plays what is left, then silence (an underrun, counted); when
# the model's thread stalls long enough for the input ring to fill, the oldest input is
# dropped (an overrun, counted). Nothing here blocks the callback but short locks
# around copies.

class AudioRing:
    """A ring of float32 samples between two threads: write() and read() never wait for data.

    write() keeps the newest samples when the ring is full (returns how many old ones it
    dropped); read(n) returns n samples, or None when fewer are there.
    """

    def __init__(self, capacity):
        self.buf = np.zeros(capacity, np.float32)
        self.start = self.size = 0
        self.lock = threading.Lock()

    def write(self, x):
        with self.lock:
            x = x[-len(self.buf):]
            dropped = max(0, self.size + len(x) - len(self.buf))
            self.start, self.size = (self.start + dropped) % len(self.buf), self.size - dropped
            end = (self.start + self.size) % len(self.buf)
            first = min(len(x), len(self.buf) - end)
            self.buf[end:end + first], self.buf[:len(x) - first] = x[:first], x[first:]
            self.size += len(x)
            return dropped

    def read(self, n):
        with self.lock:
            if self.size < n:
                return None
            idx = (self.start + np.arange(n)) % len(self.buf)
            out = self.buf[idx]
            self.start, self.size = (self.start + n) % len(self.buf), self.size - n
            return out

    def __len__(self):
        return self.size


class Live:
    """One live take: the callback, the model's thread, and what was heard and played.

    open_stream(callback, rate, block) -> a started stream object with .active and
    .close(): sounddevice's Stream by default, a stand-in in the tests.
    """

    def __init__(self, stream, codec, numbers, seconds, block, play_mix=False, prime_ms=20.0):
        self.stream, self.codec, self.numbers, self.play_mix = stream, codec, numbers, play_mix
        self.rate, self.block, hop = numbers["sample_rate"], block, numbers["hop"]
        self.chunk = numbers["chunk_frames"] * hop
        self.inp = AudioRing(max(4 * self.chunk, 2 * block))   # room for the model to lag a little
        self.out = AudioRing(int(self.rate * 2))               # at most 2 s of solo queued
        self.limit = int(seconds * self.rate)                  # samples heard before the take ends
        self.heard, self.played, self.queued_ms, self.delay_ms, self.late_ms = [], [], [], [], []
        self.skipped = 0  # solo frames dropped at the start (negative: frames of silence first)
        self.n_heard = 0  # samples heard so far (the callback counts; the main thread reads)
        self.counts = {"underruns": 0, "overruns": 0, "dropped_input_ms": 0.0, "card_flags": 0}
        self.frames, self.decoded, self.playing = [], 0, False
        # take.npz's: the band frame each solo frame sounds against (-1: dropped at the start),
        # and the band's codes as the codec graph heard them, chunk by chunk
        self.sounding, self.heard_codes = [], []
        # The solo arrives a chunk at a time, the card takes it a block at a time: playing
        # starts (and starts again after an underrun) only once prime_ms of solo is queued,
        # so that a chunk computed a little later than the one before leaves no gap.
        self.prime = int(prime_ms / 1e3 * self.rate)
        self.stop = threading.Event()
        # The samples heard and the solo still queued move together in the callback; the
        # model's thread reads both under this lock, or a block heard between its two reads
        # would place a chunk's frames a block late, on the frame after the chunk before's.
        self.clock = threading.Lock()

    def callback(self, indata, outdata, n, time_info, status):
        """The sound card's block: copy in, copy out, count; never wait on the model."""
        if status:
            self.counts["card_flags"] += 1  # PortAudio's own over- or underflow flags
        mono = indata[:, 0] if indata.ndim > 1 else indata
        dropped = self.inp.write(mono.astype(np.float32))  # the model's thread has fallen behind
        if dropped:
            self.counts["overruns"] += 1
            self.counts["dropped_input_ms"] += dropped / self.rate * 1e3
        self.heard.append(mono.copy())
        with self.clock:
            self.n_heard += len(mono)
            if not self.playing and len(self.out) >= max(n, self.prime):
                self.playing = True
            # only this thread takes from the queue, so what len() sees is there to read
            solo = self.out.read(min(n, len(self.out))) if self.playing else None
        if solo is None:
            solo = np.zeros(n, np.float32)
        elif len(solo) < n:  # the queue ran dry mid-take: what was left, then a gap one hears
            self.counts["underruns"] += 1
            self.playing = False
            solo = np.concatenate([solo, np.zeros(n - len(solo), np.float32)])
        out = solo + mono if self.play_mix else solo
        outdata[:] = np.clip(out, -1.0, 1.0).reshape(outdata.shape)
        self.played.append(solo.copy())

    def place(self, audio, lookahead):
        """The first solo audio (frames 0 ..), placed on the wall clock -> what to queue.

        Without a lookahead (L = 0), the first chunk finishes K - 1 fewer solo frames than
        it brings (the delay pattern): K - 1 frames of silence go first, so that the solo
        plays on without a gap, behind the band by the chunk, the pattern, the compute and
        the queue. A model that writes L frames ahead needs L fewer: K - 1 - L frames of
        silence, or, past K - 1, the first L - K + 1 frames dropped (their moment has
        passed), so every later frame plays L frames sooner. But never before its
        moment: at most as many frames are dropped as the band has played, and the rest of
        the lookahead waits in the queue (a committed buffer).
        """
        hop, K = self.numbers["hop"], self.numbers["n_codebooks"]
        skip = min(lookahead - (K - 1), self.n_heard // hop)
        self.skipped = skip
        return audio[skip * hop:] if skip >= 0 else np.concatenate(
            [np.zeros(-skip * hop, np.float32), audio])

    def model_loop(self, solo_stream):
        """The model's thread: each complete chunk -> codec -> steps -> decoded solo audio."""
        hop = self.numbers["hop"]
        self.frames = list(solo_stream.ahead)  # a model that looks ahead has begun already
        ahead_ms = solo_stream.lookahead * 1e3 / self.numbers["frame_rate"]
        while not self.stop.is_set():
            chunk = self.inp.read(self.chunk)
            if chunk is None:
                time.sleep(0.001)
                continue
            codes = self.codec.encode(chunk)                                  # [K, n]
            self.heard_codes.append(codes)
            for code in codes.T:                                              # [K]: a frame
                if solo_stream.n_backing - solo_stream.lookahead >= solo_stream.n_frames:
                    self.stop.set()  # the take is as long as it was built for
                    break
                done = solo_stream.push(code)
                if done is not None:
                    self.frames.append(done)
            if len(self.frames) > self.decoded:
                audio, before = self.codec.decode_new(self.frames, self.decoded), self.decoded
                if self.decoded == 0:
                    audio = self.place(audio, solo_stream.lookahead)
                self.decoded = len(self.frames)
                with self.clock:
                    queued = len(self.out)       # samples still to play before this audio
                    self.out.write(audio)
                    heard = self.n_heard         # the present, as the card counts it
                self.queued_ms.append(queued / self.rate * 1e3)
                # How late the newest solo frame will sound behind the band frame it was
                # written for: the duplex card plays a sample for each one it hears, so
                # this audio ends `queued + len(audio)` samples after the present, while
                # its frame ended when the band's frame did. That is the chunk (it must
                # arrive whole), the delay pattern, the compute and the queue, less the
                # lookahead. The card's own buffers (its input and output latency) come on top.
                end = heard + queued + len(audio)
                self.late_ms.append((end - len(self.frames) * hop) / self.rate * 1e3)
                # the frames of this audio play back to back, the last ending at `end`
                # (place() may have dropped some of the first, or put silence before them)
                first = len(self.frames) - min(len(self.frames) - before, len(audio) // hop)
                self.sounding += [-1] * (first - len(self.sounding))  # dropped by place()
                self.sounding += [round(end / hop) - (len(self.frames) - f)
                                  for f in range(first, len(self.frames))]
                self.delay_ms.append(self.late_ms[-1] + ahead_ms)  # behind the band it heard

    def run(self, solo_stream):
        """Until --seconds of input, Ctrl-C, or the device going away -> why it stopped."""
        worker = threading.Thread(target=self.model_loop, args=(solo_stream,), daemon=True)
        worker.start()
        why, last, quiet_since = "done", -1, time.perf_counter()
        try:
            while not self.stop.is_set():
                if not self.stream.active:
                    why = "the audio device stopped (unplugged, or taken by another program)"
                    break
                if self.n_heard != last:
                    last, quiet_since = self.n_heard, time.perf_counter()
                elif time.perf_counter() - quiet_since > 2.0:  # a card that stops calling back
                    why = "no audio came from the input device for 2 s"
                    break
                if self.n_heard >= self.limit:
                    break
                time.sleep(0.01)
        except KeyboardInterrupt:
            why = "Ctrl-C"
        finally:
            self.stop.set()
            worker.join(timeout=5)
            try:
                self.stream.close()
            except Exception:  # a device that vanished may fail to close: the take is kept anyway
                pass
        return why


def open_sound_card(callback, rate, block, devices):
    """sounddevice's duplex stream (one channel in, one out), started; optional package."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as err:  # OSError: the package is there, PortAudio is not
        raise SystemExit(f"--live needs sounddevice and PortAudio ({err}): pip install "
                         f"sounddevice; on Debian or Raspberry Pi OS also sudo apt install "
                         f"libportaudio2") from None
    try:
        stream = sd.Stream(samplerate=rate, blocksize=block, channels=1, dtype="float32",
                           device=devices, callback=callback)
        stream.start()
    except Exception as err:  # no such device, a rate it cannot do, busy
        raise SystemExit(f"--live: cannot open the sound card ({err}); list them with "
                         f"python -m sounddevice, then pass --input-device and --output-device") \
            from None
    return stream
