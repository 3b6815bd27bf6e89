// The chat page: a company room with fleet-wide presence, and one conversation between a visitor and
// the company's agents. Everything goes through ioplex's client contract (join, publish, members); the
// tenant's plugins check the token for every join and redact what is published.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token") ?? "";
const conversationId = params.get("conversation") ?? "42";
const $ = (id) => document.getElementById(id);

// The token's claims, for display only: the gateway's room-auth plugin is what verifies them.
function claimsOf(jwt) {
  try {
    const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  } catch {
    return {};
  }
}

const me = claimsOf(token);
const companyRoom = `company:${me.company}`;
const conversationRoom = `conversation:${conversationId}`;
$("who").textContent = `${me.name ?? me.sub ?? "anonymous"}${me.role ? ` (${me.role})` : ""}`;
$("company").textContent = me.company ?? "?";
$("conversation").textContent = conversationId;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function addMessage(from, text) {
  const li = document.createElement("li");
  const who = document.createElement("span");
  who.className = "from";
  who.textContent = from;
  li.append(who, document.createTextNode(text));
  $("messages").append(li);
}

const socket = io({ auth: { token }, transports: ["websocket"] });

async function refreshOnline() {
  const answer = await socket.timeout(5000).emitWithAck("members", companyRoom).catch(() => null);
  if (!answer?.ok) return;
  const people = new Map();
  for (const member of answer.members) {
    const data = member.data ?? {};
    people.set(data.sub ?? member.id, data);
  }
  $("online").replaceChildren(
    ...[...people.values()]
      .sort((a, b) => String(a.name ?? a.sub).localeCompare(String(b.name ?? b.sub)))
      .map((p) => {
        const li = document.createElement("li");
        li.textContent = p.name ?? p.sub;
        li.dataset.sub = p.sub;
        if (p.role === "agent") li.className = "agent";
        return li;
      }),
  );
}

socket.on("connect_error", (err) => setStatus(`refused: ${err.message}`, true));
socket.on("disconnect", (reason) => setStatus(`disconnected (${reason}), reconnecting…`, true));

socket.on("connect", async () => {
  const company = await socket.timeout(5000).emitWithAck("join", companyRoom);
  if (!company.ok) return setStatus(`refused: ${company.message}`, true);
  // Tell the company (on every node) that someone arrived; everyone refreshes the list from the fleet.
  await socket.timeout(5000).emitWithAck("publish", { room: companyRoom, event: "presence", args: [{ sub: me.sub }], self: true });
  const conversation = await socket.timeout(5000).emitWithAck("join", conversationRoom);
  if (!conversation.ok) return setStatus(`refused: ${conversation.message}`, true);
  setStatus("connected");
});

socket.on("presence", () => refreshOnline());
// Nobody announces leaving (a closed tab just disconnects): refresh now and then as well.
setInterval(() => socket.connected && refreshOnline(), 10000);
socket.on("message", (msg) => addMessage(msg.from, msg.text));

$("composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  const answer = await socket.timeout(5000).emitWithAck("publish", {
    room: conversationRoom,
    event: "message",
    args: [{ from: me.name ?? me.sub, text }],
    self: true,
  });
  if (!answer.ok) setStatus(`not sent: ${answer.message}`, true);
});
