/* ESP-IDF (v5) with esp-mqtt: connects as the device, publishes once at QoS 1 to the device's
 * own space and logs the PUBACK. Wi-Fi comes from protocol_examples_common (idf.py menuconfig,
 * "Example Connection Configuration").
 * Limits: clientId 1-64 characters; keep-alive 60 s; esp-mqtt's default buffer (1024 bytes) holds
 * the CONNECT; the clock comes from SNTP before the first CONNECT. */
#include <time.h>
#include "esp_log.h"
#include "esp_netif_sntp.h"
#include "mqtt_client.h"
#include "nvs_flash.h"
#include "protocol_examples_common.h"

@@SIGNING@@
#define PRODUCT_ID @@PRODUCT_ID@@
#define DEVICE_ID @@DEVICE_ID@@
#define DEVICE_SECRET @@DEVICE_SECRET@@
#define CLIENT_ID @@CLIENT_ID@@
#define SIGNMETHOD @@SIGNMETHOD@@
#define SECUREMODE @@SECUREMODE@@ /* 2 = TLS, 3 = plain TCP */
#define USE_TIMESTAMP @@USE_TIMESTAMP@@
#define EXCLUSIVE @@EXCLUSIVE@@
#define BROKER_URI @@SERVER_URI@@
#define TOPIC @@TOPIC@@
#if SECUREMODE == 2
static const char CA_PEM[] = @@CA_PEM@@;
#endif

static const char *TAG = "device";
static mqtt_sign_fields fields; /* esp-mqtt keeps pointers to these */

static void on_mqtt_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    esp_mqtt_event_handle_t event = data;
    switch ((esp_mqtt_event_id_t)id) {
    case MQTT_EVENT_CONNECTED:
        ESP_LOGI(TAG, "connected (CONNACK 0)");
        esp_mqtt_client_publish(event->client, TOPIC, "hello", 0, 1, 0);
        break;
    case MQTT_EVENT_PUBLISHED:
        ESP_LOGI(TAG, "PUBACK received (msg_id %d)", event->msg_id);
        break;
    case MQTT_EVENT_ERROR:
        if (event->error_handle->error_type == MQTT_ERROR_TYPE_CONNECTION_REFUSED)
            ESP_LOGE(TAG, "refused: CONNACK %d", event->error_handle->connect_return_code);
        break;
    default:
        break;
    }
}

void app_main(void)
{
    ESP_ERROR_CHECK(nvs_flash_init());
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    ESP_ERROR_CHECK(example_connect());

    long long timestamp_ms = -1;
    if (USE_TIMESTAMP) {
        esp_sntp_config_t sntp = ESP_NETIF_SNTP_DEFAULT_CONFIG("pool.ntp.org");
        esp_netif_sntp_init(&sntp);
        while (esp_netif_sntp_sync_wait(pdMS_TO_TICKS(10000)) != ESP_OK) ESP_LOGW(TAG, "no time yet");
        timestamp_ms = (long long)time(NULL) * 1000;
    }
    if (mqtt_sign(PRODUCT_ID, DEVICE_ID, DEVICE_SECRET, CLIENT_ID, SECUREMODE, SIGNMETHOD,
                  timestamp_ms, EXCLUSIVE, &fields) != 0) {
        ESP_LOGE(TAG, "signing failed");
        return;
    }
    esp_mqtt_client_config_t config = {
        .broker.address.uri = BROKER_URI,
#if SECUREMODE == 2
        .broker.verification.certificate = CA_PEM,
#endif
        .credentials.client_id = fields.client_id,
        .credentials.username = fields.username,
        .credentials.authentication.password = fields.password,
        .session.protocol_ver = MQTT_PROTOCOL_V_3_1_1,
        .session.keepalive = 60,
    };
    esp_mqtt_client_handle_t client = esp_mqtt_client_init(&config);
    esp_mqtt_client_register_event(client, ESP_EVENT_ANY_ID, on_mqtt_event, NULL);
    esp_mqtt_client_start(client);
}
