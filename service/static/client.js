// Browser client of percepnet-relay: joins a room with POST /offer, plays the room's mix,
// shows input/output levels and changes this participant's enhancement settings.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { pc: null, stream: null, room: null, id: null, key: null, audioContext: null };
window.pnr = { state: "idle", error: null, participantId: null };
const params = new URLSearchParams(location.search);

function setStatus(text, phase) {
  $("status").textContent = text;
  if (phase) window.pnr.state = phase;
}

async function listMicrophones() {
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const select = $("microphone");
    const chosen = select.value;
    select.replaceChildren(new Option("default", ""));
    for (const d of devices.filter((d) => d.kind === "audioinput")) {
      select.add(new Option(d.label || `microphone ${select.length}`, d.deviceId));
    }
    select.value = chosen;
  } catch (err) {
    console.warn("cannot list microphones", err);
  }
}

function meter(stream, element) {
  const ctx = state.audioContext;
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const data = new Float32Array(analyser.fftSize);
  const draw = () => {
    if (!state.pc) { element.value = 0; return; }
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const v of data) sum += v * v;
    const rms = Math.sqrt(sum / data.length);
    element.value = Math.min(1, Math.max(0, (20 * Math.log10(rms + 1e-9) + 60) / 60));
    requestAnimationFrame(draw);
  };
  draw();
}

// Delay measurement (`?measure=1`, used by loadtest/browser_delay.py): logs the wall-clock time
// of every sound onset in the room's audio, as "pnr-onset <ms since the epoch, when the page
// hears of it> <ms since the epoch, when it reaches the audio output>", and every
// second the receiver's statistics, as "pnr-stats <JSON>".
const ONSET_WORKLET = `
class Onsets extends AudioWorkletProcessor {
  constructor() { super(); this.quiet = 0; this.armed = false; }
  process(inputs) {
    const x = inputs[0][0];
    if (!x) return true;
    let sum = 0;
    for (const v of x) sum += v * v;
    const rms = Math.sqrt(sum / x.length);
    this.quiet = rms < 0.003 ? this.quiet + 1 : 0;
    if (this.quiet >= 40) this.armed = true;  // about 0.1 s of silence
    if (this.armed && rms > 0.01) {
      this.armed = false;
      let first = 0;
      while (first < x.length && Math.abs(x[first]) <= 0.01) first++;
      this.port.postMessage(currentTime + first / sampleRate);
    }
    return true;
  }
}
registerProcessor("pnr-onsets", Onsets);`;

async function measureOnsets(stream) {
  const ctx = state.audioContext;
  const url = URL.createObjectURL(new Blob([ONSET_WORKLET], { type: "text/javascript" }));
  await ctx.audioWorklet.addModule(url);
  const node = new AudioWorkletNode(ctx, "pnr-onsets");
  node.port.onmessage = (event) => {
    // also by the audio clock: when the onset's sample reaches the output (no main-thread delay)
    const { contextTime, performanceTime } = ctx.getOutputTimestamp();
    const audio = performanceTime + (event.data - contextTime) * 1000;
    console.log(`pnr-onset ${performance.timeOrigin + performance.now()} ${performance.timeOrigin + audio}`);
  };
  ctx.createMediaStreamSource(stream).connect(node);
  const fields = [
    "packetsReceived", "packetsLost", "totalSamplesReceived", "concealedSamples",
    "silentConcealedSamples", "concealmentEvents", "jitterBufferDelay",
    "jitterBufferEmittedCount", "jitterBufferTargetDelay", "jitterBufferMinimumDelay", "jitter",
    "insertedSamplesForDeceleration", "removedSamplesForAcceleration", "ssrc",
  ];
  setInterval(async () => {
    if (!state.pc) return;
    for (const report of (await state.pc.getStats()).values()) {
      if (report.type === "inbound-rtp" && report.kind === "audio") {
        console.log(`pnr-stats ${JSON.stringify(Object.fromEntries(fields.map((f) => [f, report[f]])))}`);
      }
    }
  }, 1000);
}

function waitForIceGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000); // use what we have rather than hang on an unreachable server
  });
}

async function join(event) {
  if (event) event.preventDefault();
  if (state.pc) return;
  window.pnr.error = null;
  const room = $("room").value.trim();
  const deviceId = $("microphone").value;
  setStatus("asking for the microphone…", "starting");
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        deviceId: deviceId ? { exact: deviceId } : undefined,
        // the relay removes noise; the browser's own suppressor would fight it
        noiseSuppression: false, echoCancellation: true, autoGainControl: false,
      },
    });
    listMicrophones();
    state.audioContext = state.audioContext || new AudioContext();
    const pc = new RTCPeerConnection({ iceServers: window.PNR_ICE_SERVERS || [] });
    state.pc = pc;
    for (const track of state.stream.getAudioTracks()) pc.addTrack(track, state.stream);
    pc.addEventListener("track", (e) => {
      const remote = new MediaStream([e.track]);
      $("remote").srcObject = remote;
      meter(remote, $("out-level"));
      if (params.get("measure") === "1") measureOnsets(remote);
    });
    pc.addEventListener("connectionstatechange", () => {
      setStatus(`connection ${pc.connectionState}`, pc.connectionState);
      if (["failed", "closed"].includes(pc.connectionState)) leave();
    });
    meter(state.stream, $("in-level"));
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    setStatus("joining…", "joining");
    const response = await fetch("/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        sdp: pc.localDescription.sdp, type: "offer", room,
        name: $("name").value || undefined, token: $("token").value || undefined,
        echo: $("echo").checked,
      }),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.detail || answer.error || response.statusText);
    state.room = room;
    state.id = answer.participant_id;
    state.key = answer.participant_key;
    window.pnr.participantId = state.id;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    $("join").disabled = true;
    $("leave").disabled = false;
    await sendSettings();
    showSpeakers();
  } catch (err) {
    window.pnr.error = String(err.message || err);
    setStatus(`could not join: ${window.pnr.error}`, "error");
    await leave(false);
  }
}

async function leave(tellServer = true) {
  const { pc, room, id, key } = state;
  state.pc = null;
  if (pc) pc.close();
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  if (tellServer && room && id) {
    fetch(`/rooms/${encodeURIComponent(room)}/participants/${encodeURIComponent(id)}`,
      { method: "DELETE", headers: { "X-Participant-Key": key } }).catch(() => {});
  }
  state.room = state.id = state.key = null;
  $("join").disabled = false;
  $("leave").disabled = true;
  if (window.pnr.state !== "error") setStatus("not connected", "idle");
}

// who is speaking: the relay's voice activity, asked for twice a second while in a room
async function showSpeakers() {
  const { room, id, key } = state;
  if (!id) { $("speakers").replaceChildren(); return; }
  try {
    const response = await fetch(
      `/rooms/${encodeURIComponent(room)}/participants/${encodeURIComponent(id)}/speakers`,
      { headers: { "X-Participant-Key": key } });
    if (response.ok) {
      const items = (await response.json()).map((p) => {
        const item = document.createElement("li");
        item.textContent = p.you ? `${p.name} (you)` : p.name;
        item.className = p.speaking ? "speaking" : "";
        item.title = `${p.level_db} dBFS`;
        return item;
      });
      $("speakers").replaceChildren(...items);
    }
  } catch (err) { /* the next poll tries again */ }
  if (state.id === id) setTimeout(showSpeakers, 500);
}

function attenuationLimit() {
  const value = Number($("atten").value);
  return value >= 60 ? null : value;
}

async function sendSettings() {
  const limit = attenuationLimit();
  $("atten-value").textContent = limit === null ? "unlimited" : `${limit} dB`;
  if (!state.id) return;
  const response = await fetch(
    `/rooms/${encodeURIComponent(state.room)}/participants/${encodeURIComponent(state.id)}`, {
      method: "PATCH",
      headers: { "Content-Type": "application/json", "X-Participant-Key": state.key },
      body: JSON.stringify({ enhance: $("enhance").checked, attenuation_limit_db: limit }),
    });
  if (!response.ok) console.warn("settings refused", await response.text());
}

$("join-form").addEventListener("submit", join);
$("leave").addEventListener("click", () => leave());
$("enhance").addEventListener("change", sendSettings);
$("atten").addEventListener("input", sendSettings);
window.addEventListener("beforeunload", () => leave());
navigator.mediaDevices?.addEventListener?.("devicechange", listMicrophones);

if (params.get("room")) $("room").value = params.get("room");
if (params.get("name")) $("name").value = params.get("name");
if (params.get("token")) $("token").value = params.get("token");
if (params.get("echo") === "1") $("echo").checked = true;
listMicrophones();
if (params.get("autojoin") === "1") join();
