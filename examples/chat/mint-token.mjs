// Prints a demo token, as a tenant's backend would issue after its own login:
//   node examples/chat/mint-token.mjs '{"sub":"agent-ann","name":"Ann","company":"acme","conversations":["42"],"role":"agent"}'
import crypto from "node:crypto";

export const DEMO_SECRET = "acme-demo-secret-change-me";

export function mintToken(claims, secret = DEMO_SECRET) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const signed = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${signed}.${crypto.createHmac("sha256", secret).update(signed).digest("base64url")}`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(mintToken(JSON.parse(process.argv[2] ?? "{}")));
}
