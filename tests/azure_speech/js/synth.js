// Says each text given on the command line with the official JavaScript Speech SDK against
// a host (the speech peer), one clause after the other on one synthesizer, and prints one
// JSON line per clause: what the SDK reported and what its synthesizing events carried.
// Usage: node synth.js ws://127.0.0.1:PORT VOICE TEXT...
const sdk = require("microsoft-cognitiveservices-speech-sdk");

const [host, voice, ...texts] = process.argv.slice(2);
const config = sdk.SpeechConfig.fromHost(new URL(host), "peer-key");
config.speechSynthesisOutputFormat = sdk.SpeechSynthesisOutputFormat.Raw16Khz16BitMonoPcm;
config.speechSynthesisVoiceName = voice;
const synth = new sdk.SpeechSynthesizer(config, null);
let chunks = [];
synth.synthesizing = (_, e) => { chunks.push(e.result.audioData.byteLength); };

function say(i) {
  if (i >= texts.length) { synth.close(); return; }
  synth.speakTextAsync(texts[i], (r) => {
    console.log(JSON.stringify({
      text: texts[i], reason: sdk.ResultReason[r.reason], audio: r.audioData ? r.audioData.byteLength : 0,
      chunks, error: r.errorDetails || "",
    }));
    chunks = [];
    say(i + 1);
  }, (err) => { console.log(JSON.stringify({ text: texts[i], reason: "error", error: String(err) })); synth.close(); });
}
say(0);
