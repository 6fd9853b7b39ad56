// Connects as the device with mqtt.js (MQTT 3.1.1), publishes once at QoS 1 to the device's own
// space and exits 0 on the PUBACK. Run: npm install && node index.js
// Limits: clientId 1-64 characters; keep-alive 60 s; signs with the system clock (Date.now()).
'use strict';
const fs = require('fs');
const path = require('path');
const mqtt = require('mqtt');
const { mqttSign } = require('./mqtt_sign');

const config = {
  productId: @@PRODUCT_ID@@,
  deviceId: @@DEVICE_ID@@,
  deviceSecret: @@DEVICE_SECRET@@,
  clientId: @@CLIENT_ID@@,
  securemode: @@SECUREMODE@@, // 2 = TLS, 3 = plain TCP
  signmethod: @@SIGNMETHOD@@,
  useTimestamp: @@USE_TIMESTAMP@@,
  exclusive: @@EXCLUSIVE@@,
  host: @@HOST@@,
  port: @@PORT@@,
  topic: @@TOPIC@@,
};

const fields = mqttSign({ ...config, timestamp: config.useTimestamp ? Date.now() : null });
const options = {
  host: config.host,
  port: config.port,
  protocol: config.securemode === 2 ? 'mqtts' : 'mqtt',
  protocolVersion: 4, // MQTT 3.1.1
  keepalive: 60,
  clean: true,
  reconnectPeriod: 0, // a refused CONNECT is an answer, not a reason to retry in a loop
  connectTimeout: 10000,
  clientId: fields.mqttClientId,
  username: fields.mqttUsername,
  password: fields.mqttPassword,
};
if (config.securemode === 2) {
  options.ca = fs.readFileSync(path.join(__dirname, '..', 'ca.pem'));
  options.rejectUnauthorized = true;
}

const fail = (message) => {
  console.error(message);
  process.exit(1);
};
setTimeout(() => fail('no PUBACK within 15 s'), 15000).unref();
const client = mqtt.connect(options);
client.on('error', (error) => fail('connection failed: ' + error.message));
client.on('close', () => fail('the broker closed the connection'));
client.on('connect', () => {
  console.log('connected (CONNACK 0) as ' + fields.mqttClientId);
  client.publish(config.topic, 'hello', { qos: 1 }, (error) => {
    if (error) fail('publish failed: ' + error.message);
    console.log('published to ' + config.topic + ' at QoS 1: PUBACK received');
    client.removeAllListeners('close');
    client.end(false, () => process.exit(0));
  });
});
