// mod_procd demo: any HTTP program (Node.js), as user procd-demo-node.
// It serves on the socket the manager hands it as fd 3.
const http = require("http");
const os = require("os");
http
  .createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end(`<h1>Hello from Node.js ${process.version}</h1><p>pid ${process.pid}, user ${os.userInfo().username}, ` +
      `path ${req.url}, forwarded for ${req.headers["x-forwarded-for"] || "?"}</p><p><a href="/">back</a></p>`);
  })
  .listen({ fd: 3 });
