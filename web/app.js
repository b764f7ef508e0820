// Placeholder web client: the real one replaces this file. It only shows the connection state.
"use strict";
(function () {
  const status = document.getElementById("status");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(scheme + "//" + location.host + "/ws");
  socket.addEventListener("open", () => { status.textContent = "Connected."; });
  socket.addEventListener("close", () => { status.textContent = "Disconnected."; });
  socket.addEventListener("message", (event) => {
    if (event.data === "ping") socket.send("pong");
  });
})();
