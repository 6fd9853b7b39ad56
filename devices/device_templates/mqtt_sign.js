// The platform's MQTT signature (MQTT-ACCESS.md sections 2-3) with Node's crypto.
// content = "clientId" c "deviceId" d "productId" p ["timestamp" t],
// password = lowercase hex of HMAC(deviceSecret, content).
'use strict';
const crypto = require('crypto');

const HASHES = { hmacmd5: 'md5', hmacsha1: 'sha1', hmacsha256: 'sha256' };

// timestamp: milliseconds since 1970, or null to leave it out. Returns the three CONNECT fields.
function mqttSign({ productId, deviceId, deviceSecret, clientId, securemode, signmethod,
  timestamp = null, exclusive = false }) {
  const hash = HASHES[signmethod];
  if (!hash) throw new Error('signmethod must be hmacmd5, hmacsha1 or hmacsha256');
  if (securemode !== 2 && securemode !== 3) throw new Error('securemode must be 2 or 3');
  const ts = timestamp === null || timestamp === undefined ? '' : String(timestamp);
  let content = 'clientId' + clientId + 'deviceId' + deviceId + 'productId' + productId;
  const extensions = ['securemode=' + securemode, 'signmethod=' + signmethod];
  if (ts) {
    content += 'timestamp' + ts;
    extensions.push('timestamp=' + ts);
  }
  if (exclusive) extensions.push('exclusive=true');
  return {
    mqttClientId: clientId + '|' + extensions.join(',') + '|',
    mqttUsername: deviceId + '&' + productId,
    mqttPassword: crypto.createHmac(hash, deviceSecret).update(content).digest('hex'),
  };
}

module.exports = { mqttSign };
