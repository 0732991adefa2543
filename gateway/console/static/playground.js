// The playground: send an uploaded file or a MediaRecorder recording (webm/ogg, which the
// gateway decodes) with the session's CSRF token, and show the transcript and its exact cost.
"use strict";
(() => {
  const form = document.getElementById("playground");
  if (!form) return;
  const recordButton = document.getElementById("pg-record");
  const stopButton = document.getElementById("pg-stop");
  const recordedLabel = document.getElementById("pg-recorded");
  const status = document.getElementById("pg-status");
  let recording = null;
  let recorder = null;

  recordButton.addEventListener("click", async () => {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      status.textContent = "The browser gave no microphone: " + error.message;
      return;
    }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
    recorder.addEventListener("stop", () => {
      stream.getTracks().forEach((track) => track.stop());
      recording = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
      recordedLabel.textContent = "Recorded " + Math.round(recording.size / 1024) + " KiB; it is sent instead of a file.";
      recordButton.disabled = false;
      stopButton.disabled = true;
    });
    recorder.start();
    recordButton.disabled = true;
    stopButton.disabled = false;
    recordedLabel.textContent = "Recording…";
  });

  stopButton.addEventListener("click", () => { if (recorder) recorder.stop(); });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    if (recording) {
      const extension = recording.type.includes("ogg") ? "ogg" : "webm";
      data.set("file", recording, "recording." + extension);
    } else if (!form.elements.file.files.length) {
      status.textContent = "Choose a file or record something first.";
      return;
    }
    status.textContent = "Transcribing…";
    const response = await fetch("/console/portal/playground", {
      method: "POST",
      body: data,
      headers: { "X-CSRF-Token": form.dataset.csrf, "Accept": "application/json" },
      credentials: "same-origin",
    });
    const answer = await response.json();
    if (!response.ok) {
      status.textContent = "Refused (" + response.status + " " + answer.error.code + "): " + answer.error.message;
      return;
    }
    status.textContent = "Transcribed and billed to key " + answer.key_prefix + (answer.cached ? " (from the cache)." : ".");
    document.getElementById("pg-request-id").textContent = answer.request_id;
    document.getElementById("pg-tokens").textContent = answer.charge.billed_tokens + " " + answer.charge.token_unit;
    document.getElementById("pg-cost").textContent = answer.charge.cost;
    document.getElementById("pg-cost-micros").textContent = answer.charge.cost_micros;
    document.getElementById("pg-seconds").textContent = answer.charge.audio_seconds;
    document.getElementById("pg-charge").hidden = false;
    document.getElementById("pg-body").value = answer.body;
  });
})();
